//! EVAL, EVALSHA, their read-only forms and SCRIPT, with Redis 7.0's replies and errors.
//! The engine lives in `crate::scripting`.

use ringkv_protocol::Args;

use crate::handler::{CmdError, CmdResult, Ctx, help, int_arg, is};
use crate::scripting::Invocation;

/// A script's KEYS and ARGV.
type KeysAndArgv<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);

/// The keys and arguments after `numkeys` (at 2), checked as Redis checks them.
fn keys_and_argv<'a>(args: &Args<'a>) -> Result<KeysAndArgv<'a>, CmdError> {
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
    let split = 3 + numkeys as usize;
    Ok((
        (3..split).map(|i| args.get(i)).collect(),
        (split..args.len()).map(|i| args.get(i)).collect(),
    ))
}

fn eval_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let (keys, argv) = keys_and_argv(args)?;
    let sha = ctx.node.scripting.load(args.get(1))?;
    ctx.node.scripting.run(
        ctx,
        Invocation {
            sha: &sha,
            keys,
            argv,
            read_only,
        },
    )
}

fn evalsha_generic(ctx: &mut Ctx<'_, '_>, args: &Args<'_>, read_only: bool) -> CmdResult {
    let (keys, argv) = keys_and_argv(args)?;
    let sha = String::from_utf8_lossy(args.get(1)).to_ascii_lowercase();
    ctx.node.scripting.run(
        ctx,
        Invocation {
            sha: &sha,
            keys,
            argv,
            read_only,
        },
    )
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

/// SCRIPT LOAD script
pub fn script_load(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let sha = ctx.node.scripting.load(args.get(2))?;
    ctx.out.bulk(sha.as_bytes());
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

/// SCRIPT FLUSH [ASYNC|SYNC]
pub fn script_flush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        2 => {}
        3 if is(args.get(2), "ASYNC") || is(args.get(2), "SYNC") => {}
        _ => {
            return Err(CmdError::Custom(
                "ERR SCRIPT FLUSH only support SYNC|ASYNC option".into(),
            ));
        }
    }
    ctx.node.scripting.flush();
    ctx.out.ok();
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
