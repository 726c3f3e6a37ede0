//! EVAL, EVALSHA, their read-only forms and SCRIPT, with Redis 7.0's replies and errors.
//! The engine lives in `crate::scripting`.

use ringkv_protocol::{Args, ReplyWriter};

use ringkv_store::glob_match;

use crate::commands::Parked;
use crate::handler::{CmdError, CmdResult, Ctx, help, int_arg, is};
use crate::scripting::{Invocation, RestorePolicy};

/// `numkeys` (at 2), checked as Redis checks it against the arguments after it.
fn numkeys(args: &Args<'_>) -> Result<usize, CmdError> {
    let numkeys = int_arg(args.get(2))?;
    if numkeys < 0 {
        return Err(CmdError::Custom(
            "ERR Number of keys can't be negative".into(),
        ));
    }
    if numkeys as usize > args.len() - 3 {
        return Err(CmdError::Custom(
            "ERR Number of keys can't be greater than number of args".into(),
        ));
    }
    Ok(numkeys as usize)
}

fn eval_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let numkeys = numkeys(args)?;
    let sha = ctx.node.scripting.load(args.get(1))?;
    ctx.node
        .scripting
        .run(ctx, Invocation::new(&sha, args, numkeys, read_only))
}

fn evalsha_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    // A SHA-1 is 40 hex digits: Redis answers any other length NOSCRIPT before it reads
    // numkeys, and a 40-byte one after.
    let given = args.get(1);
    let mut lower = [0u8; 40];
    if given.len() != lower.len() {
        return Err(crate::scripting::no_script());
    }
    let numkeys = numkeys(args)?;
    // Lowercased on the stack; a byte that is no hex digit matches no script.
    for (to, from) in lower.iter_mut().zip(given) {
        *to = from.to_ascii_lowercase();
    }
    let sha = std::str::from_utf8(&lower).map_err(|_| crate::scripting::no_script())?;
    ctx.node
        .scripting
        .run(ctx, Invocation::new(sha, args, numkeys, read_only))
}

/// EVAL script numkeys [key ...] [arg ...]
pub fn eval(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    eval_generic(ctx, &args, false)
}

/// EVAL_RO script numkeys [key ...] [arg ...]
pub fn eval_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    eval_generic(ctx, &args, true)
}

/// EVALSHA sha1 numkeys [key ...] [arg ...]
pub fn evalsha(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    evalsha_generic(ctx, &args, false)
}

/// EVALSHA_RO sha1 numkeys [key ...] [arg ...]
pub fn evalsha_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    evalsha_generic(ctx, &args, true)
}

/// SCRIPT with no subcommand.
pub fn script_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("script"))
}

/// Scripts and libraries are the cluster's: a change a client makes on one member goes to
/// every other member before the client hears the reply, so an EVALSHA or FCALL routed to
/// any member next finds it. A change another member passed on is not passed again; inside
/// MULTI or a script, which cannot wait, it goes out without the reply waiting for it.
/// Every member counts the changes it applied this way, from a client or from another
/// member: one that missed some counts fewer and takes the whole set from one that counts
/// more (`scripting::shared`). Changes that stay on one member (FUNCTION DELETE, RESTORE,
/// an EVAL's script) are not counted, so they are not carried to the others that way.
fn answer_shared(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, reply: impl FnOnce(&mut ReplyWriter<'_>)) {
    ctx.node.scripting.note_shared_change();
    let Some(cluster) = ctx.node.cluster.clone().filter(|_| !ctx.conn.forwarded) else {
        return reply(ctx.out);
    };
    let change: Vec<Vec<u8>> = args.iter().map(<[u8]>::to_vec).collect();
    let sent = tokio::spawn(async move { cluster.tell_members(&change).await });
    if ctx.conn.no_block {
        return reply(ctx.out);
    }
    let mut answer = Vec::new();
    reply(&mut ReplyWriter::new(&mut answer, ctx.conn.protocol));
    ctx.conn.parked = Some(Parked::Shared { sent, answer });
}

/// SCRIPT LOAD script
pub fn script_load(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let sha = ctx.node.scripting.load(args.get(2))?;
    answer_shared(ctx, &args, |out| out.bulk(sha.as_bytes()));
    Ok(())
}

/// CLUSTER SCRIPTS: every cached script's body, for a member that starts (see
/// `scripting::shared`).
pub fn cluster_scripts(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let bodies = ctx.node.scripting.bodies();
    ctx.out.array(bodies.len());
    for body in &bodies {
        ctx.out.bulk(body);
    }
    Ok(())
}

/// SCRIPT EXISTS sha1 [sha1 ...]
pub fn script_exists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ctx.out.array(args.len() - 2);
    for i in 2..args.len() {
        let sha = String::from_utf8_lossy(args.get(i));
        ctx.out.int(i64::from(ctx.node.scripting.exists(&sha)));
    }
    Ok(())
}

/// SCRIPT FLUSH's and FUNCTION FLUSH's optional ASYNC|SYNC (both flush at once);
/// `refusal` is each one's own wording of the error.
fn flush_option(args: &Args<'_>, refusal: &str) -> CmdResult {
    match args.len() {
        2 => Ok(()),
        3 if is(args.get(2), "ASYNC") || is(args.get(2), "SYNC") => Ok(()),
        _ => Err(CmdError::Custom(refusal.into())),
    }
}

/// SCRIPT FLUSH [ASYNC|SYNC]
pub fn script_flush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    flush_option(&args, "ERR SCRIPT FLUSH only support SYNC|ASYNC option")?;
    ctx.node.scripting.flush();
    answer_shared(ctx, &args, |out| out.ok());
    Ok(())
}

/// SCRIPT KILL: a script that runs is stopped from its own thread (see the busy path in
/// dispatch); here, under the gate, none is running.
pub fn script_kill(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::Custom(
        "NOTBUSY No scripts in execution right now.".into(),
    ))
}

/// SCRIPT HELP
pub fn script_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "SCRIPT",
        &[
            "DEBUG (YES|SYNC|NO)",
            "    Set the debug mode for subsequent scripts executed.",
            "EXISTS <sha1> [<sha1> ...]",
            "    Return information about the existence of the scripts in the script cache.",
            "FLUSH [ASYNC|SYNC]",
            "    Flush the Lua scripts cache. Very dangerous on replicas.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the scripts cache.",
            "    * SYNC: Synchronously flush the scripts cache.",
            "KILL",
            "    Kill the currently executing Lua script.",
            "LOAD <script>",
            "    Load a script into the scripts cache without executing it.",
        ],
    );
    Ok(())
}

/// FCALL function numkeys [key ...] [arg ...]
pub fn fcall(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    fcall_generic(ctx, &args, false)
}

/// FCALL_RO function numkeys [key ...] [arg ...]
pub fn fcall_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    fcall_generic(ctx, &args, true)
}

fn fcall_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let numkeys = numkeys(args)?;
    let name = String::from_utf8_lossy(args.get(1));
    ctx.node
        .scripting
        .fcall(ctx, Invocation::new(&name, args, numkeys, read_only))
}

/// Keeps a standalone node's libraries in its store after they changed.
fn persist_functions(ctx: &Ctx<'_, '_>) {
    ctx.node
        .scripting
        .persist_functions(&ctx.node.store, ctx.now);
}

/// FUNCTION with no subcommand.
pub fn function_help_or_arity(_: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    Err(CmdError::WrongArity("function"))
}

/// FUNCTION LOAD [REPLACE] function-code
pub fn function_load(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut replace = false;
    let mut at = 2;
    while at < args.len() - 1 {
        if is(args.get(at), "REPLACE") {
            replace = true;
            at += 1;
        } else {
            return Err(CmdError::Custom(format!(
                "ERR Unknown option given: {}",
                String::from_utf8_lossy(args.get(at))
            )));
        }
    }
    let code = args.get(at);
    // In a cluster the same library may come from a member and from a client that sends
    // FUNCTION LOAD to every primary itself (as redis-py does): the same code is no clash.
    let held = ctx.node.cluster.is_some() && !replace;
    let name = match ctx.node.scripting.library_holding(code).filter(|_| held) {
        Some(name) => name,
        None => ctx.node.scripting.function_load(code, replace)?,
    };
    persist_functions(ctx);
    answer_shared(ctx, &args, |out| out.bulk(name.as_bytes()));
    Ok(())
}

/// FUNCTION DELETE library-name
pub fn function_delete(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if !ctx
        .node
        .scripting
        .function_delete(&String::from_utf8_lossy(args.get(2)))
    {
        return Err(CmdError::Custom("ERR Library not found".into()));
    }
    persist_functions(ctx);
    ctx.out.ok();
    Ok(())
}

/// FUNCTION FLUSH [ASYNC|SYNC]
pub fn function_flush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    flush_option(&args, "ERR FUNCTION FLUSH only supports SYNC|ASYNC option")?;
    ctx.node.scripting.function_flush();
    persist_functions(ctx);
    answer_shared(ctx, &args, |out| out.ok());
    Ok(())
}

/// FUNCTION LIST [LIBRARYNAME library-name-pattern] [WITHCODE]
pub fn function_list(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut with_code, mut pattern) = (false, None);
    let mut at = 2;
    while at < args.len() {
        if is(args.get(at), "WITHCODE") {
            with_code = true;
        } else if is(args.get(at), "LIBRARYNAME") {
            at += 1;
            if at >= args.len() {
                return Err(CmdError::Custom(
                    "ERR library name argument was not given".into(),
                ));
            }
            pattern = Some(args.get(at));
        } else {
            return Err(CmdError::Custom(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(args.get(at))
            )));
        }
        at += 1;
    }
    let out = &mut *ctx.out;
    ctx.node.scripting.with_libraries(|libraries| {
        let listed: Vec<_> = libraries
            .all()
            .filter(|library| pattern.is_none_or(|p| glob_match(p, library.name.as_bytes(), false)))
            .collect();
        out.array(listed.len());
        for library in listed {
            out.map(if with_code { 4 } else { 3 });
            out.bulk(b"library_name");
            out.bulk(library.name.as_bytes());
            out.bulk(b"engine");
            out.bulk(b"LUA");
            out.bulk(b"functions");
            out.array(library.functions.len());
            for function in &library.functions {
                out.map(3);
                out.bulk(b"name");
                out.bulk(function.name.as_bytes());
                out.bulk(b"description");
                out.bulk_or_null(function.description.as_deref().map(str::as_bytes));
                out.bulk(b"flags");
                out.set(function.flag_names.len());
                for flag in &function.flag_names {
                    // Redis writes the flags as status replies, not bulks.
                    out.simple(flag);
                }
            }
            if with_code {
                out.bulk(b"library_code");
                out.bulk(&library.code);
            }
        }
    });
    Ok(())
}

/// FUNCTION DUMP
pub fn function_dump(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let payload = ctx.node.scripting.function_dump();
    ctx.out.bulk(&payload);
    Ok(())
}

/// FUNCTION RESTORE serialized-value [FLUSH|APPEND|REPLACE]
pub fn function_restore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let policy = match args.len() {
        3 => RestorePolicy::Append,
        4 if is(args.get(3), "FLUSH") => RestorePolicy::Flush,
        4 if is(args.get(3), "APPEND") => RestorePolicy::Append,
        4 if is(args.get(3), "REPLACE") => RestorePolicy::Replace,
        _ => {
            return Err(CmdError::Custom(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE."
                    .into(),
            ));
        }
    };
    ctx.node.scripting.function_restore(args.get(2), policy)?;
    persist_functions(ctx);
    ctx.out.ok();
    Ok(())
}

/// FUNCTION STATS: no script is running when this answers (it waits for the gate).
pub fn function_stats(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    let (libraries, functions) = ctx.node.scripting.with_libraries(|l| l.counts());
    let out = &mut *ctx.out;
    out.map(2);
    out.bulk(b"running_script");
    out.null();
    out.bulk(b"engines");
    out.map(1);
    out.bulk(b"LUA");
    out.map(2);
    out.bulk(b"libraries_count");
    out.int(libraries as i64);
    out.bulk(b"functions_count");
    out.int(functions as i64);
    Ok(())
}

/// FUNCTION KILL: as SCRIPT KILL.
pub fn function_kill(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    script_kill(ctx, args)
}

/// FUNCTION HELP
pub fn function_help(ctx: &mut Ctx<'_, '_>, _: Args<'_>) -> CmdResult {
    help(
        ctx,
        "FUNCTION",
        &[
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Create a new library with the given library name and code.",
            "DELETE <LIBRARY NAME>",
            "    Delete the given library.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    Return general information on all the libraries:",
            "    * Library name",
            "    * The engine used to run the Library",
            "    * Library description",
            "    * Functions list",
            "    * Library code (if WITHCODE is given)",
            "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
            "STATS",
            "    Return information about the current function running:",
            "    * Function name",
            "    * Command used to run the function",
            "    * Duration in MS that the function is running",
            "    If no function is running, return nil",
            "    In addition, returns a list of available engines.",
            "KILL",
            "    Kill the current running function.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete all the libraries.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the libraries.",
            "    * SYNC: Synchronously flush the libraries.",
            "DUMP",
            "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
            "    control how to handle existing libraries (default APPEND):",
            "    * FLUSH: delete all existing libraries.",
            "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
            "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
            "      libraries with the new libraries (notice that even on this option there is a chance of failure",
            "      in case of functions name collision with another library).",
        ],
    );
    Ok(())
}
