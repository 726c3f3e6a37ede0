//! Redis 7's function libraries (FUNCTION LOAD … `#!lua name=mylib`): what a library is,
//! its metadata line, the names it may use, and the registry of the node's libraries.
//! Running a library's code (to learn what it registers) is the engine's part.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::handler::CmdError;

use super::ScriptFlags;

/// One function a library registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Its name (FCALL's first argument).
    pub name: String,
    /// The description given to `redis.register_function`, if any.
    pub description: Option<String>,
    /// The flags given, in the order given.
    pub flag_names: Vec<String>,
    /// What they mean.
    pub flags: ScriptFlags,
}

/// A loaded library: its code and the functions it registered.
#[derive(Debug, Clone)]
pub struct Library {
    /// The name from its `#!lua name=` line.
    pub name: String,
    /// The code as FUNCTION LOAD gave it.
    pub code: Box<[u8]>,
    /// What it registered, in order.
    pub functions: Vec<FunctionInfo>,
}

fn err(message: impl Into<String>) -> CmdError {
    CmdError::Custom(format!("ERR {}", message.into()))
}

/// True for a name Redis accepts for a library or a function: letters, digits and
/// underscores, at least one.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The library name from the code's first line (`#!lua name=<name>`), as Redis 7.0 reads
/// it.
pub fn library_name(code: &[u8]) -> Result<String, CmdError> {
    if !code.starts_with(b"#!") {
        return Err(err("Missing library metadata"));
    }
    let end = code.iter().position(|&b| b == b'\n').unwrap_or(code.len());
    let line = String::from_utf8_lossy(&code[2..end]).into_owned();
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or_default();
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(err(format!("Engine '{engine}' not found")));
    }
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(value) => name = Some(value.to_string()),
            None => return Err(err(format!("Invalid metadata value given: {part}"))),
        }
    }
    let name = name.ok_or_else(|| err("Library name was not given"))?;
    if !valid_name(&name) {
        return Err(err(
            "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
        ));
    }
    Ok(name)
}

/// The node's libraries and an index of their functions.
#[derive(Debug, Default)]
pub struct Libraries {
    libraries: BTreeMap<String, Arc<Library>>,
    functions: HashMap<String, String>,
    /// Moves on at every change: each thread's Lua state reloads its libraries then.
    pub generation: u64,
}

impl Libraries {
    /// The library named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Library>> {
        self.libraries.get(name)
    }

    /// The library that registered function `name`, and its information.
    pub fn function(&self, name: &str) -> Option<(&Arc<Library>, &FunctionInfo)> {
        let library = self.libraries.get(self.functions.get(name)?)?;
        let info = library.functions.iter().find(|f| f.name == name)?;
        Some((library, info))
    }

    /// Every library, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Library>> {
        self.libraries.values()
    }

    /// How many libraries and functions there are (FUNCTION STATS).
    pub fn counts(&self) -> (usize, usize) {
        (self.libraries.len(), self.functions.len())
    }

    /// Checks that `library` may be added (`replace` lets it take its own name's place);
    /// Redis's errors otherwise.
    pub fn check(&self, library: &Library, replace: bool) -> Result<(), CmdError> {
        if !replace && self.libraries.contains_key(&library.name) {
            return Err(err(format!("Library '{}' already exists", library.name)));
        }
        for function in &library.functions {
            if let Some(owner) = self.functions.get(&function.name)
                && owner != &library.name
            {
                return Err(err(format!("Function {} already exists", function.name)));
            }
        }
        Ok(())
    }

    /// Adds (or replaces) a library already checked.
    pub fn insert(&mut self, library: Library) {
        self.remove(&library.name);
        for function in &library.functions {
            self.functions
                .insert(function.name.clone(), library.name.clone());
        }
        self.libraries
            .insert(library.name.clone(), Arc::new(library));
        self.generation += 1;
    }

    /// Removes a library; false when there is none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(library) = self.libraries.remove(name) else {
            return false;
        };
        for function in &library.functions {
            self.functions.remove(&function.name);
        }
        self.generation += 1;
        true
    }

    /// Removes every library.
    pub fn clear(&mut self) {
        self.libraries.clear();
        self.functions.clear();
        self.generation += 1;
    }
}

/// FUNCTION DUMP's payload: a version, the libraries' code, and a CRC-32 of it all.
pub fn dump(libraries: &Libraries) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&PAYLOAD_VERSION.to_le_bytes());
    for library in libraries.all() {
        out.extend_from_slice(&(library.code.len() as u32).to_le_bytes());
        out.extend_from_slice(&library.code);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

const PAYLOAD_VERSION: u16 = 1;

/// The libraries' code in a FUNCTION DUMP payload; Redis's error for anything else.
pub fn undump(payload: &[u8]) -> Result<Vec<Vec<u8>>, CmdError> {
    let wrong = || err("DUMP payload version or checksum are wrong");
    let (body, crc) = payload
        .split_last_chunk::<4>()
        .filter(|(body, _)| body.len() >= 2)
        .ok_or_else(wrong)?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc)
        || u16::from_le_bytes([body[0], body[1]]) != PAYLOAD_VERSION
    {
        return Err(wrong());
    }
    let mut rest = &body[2..];
    let mut codes = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(wrong)?;
        let len = u32::from_le_bytes(*len) as usize;
        let code = tail.get(..len).ok_or_else(wrong)?;
        codes.push(code.to_vec());
        rest = &tail[len..];
    }
    Ok(codes)
}

/// A function a library registered as it loaded, with its callback in that Lua state.
pub struct Registered {
    /// What FUNCTION LIST shows of it.
    pub info: FunctionInfo,
    /// The function FCALL calls.
    pub callback: mlua::Function,
}

/// Where `redis.register_function` puts what it registers while a library loads (`None`
/// at any other time).
pub type Collector = std::rc::Rc<std::cell::RefCell<Option<Vec<Registered>>>>;

fn raise(message: &str) -> mlua::Error {
    super::api::raise_table(message)
}

/// `redis.register_function(name, callback)` or `redis.register_function{function_name=,
/// callback=, flags=, description=}`, with Redis 7.0's checks and words.
pub fn register_function(lua: &mlua::Lua, collector: Collector) -> mlua::Result<mlua::Function> {
    use mlua::Value;
    lua.create_function(move |_, args: mlua::MultiValue| {
        let args: Vec<Value> = args.into_iter().collect();
        let (name, callback, flag_names, description) = match args.as_slice() {
            [Value::Table(named)] => {
                let (mut name, mut callback, mut flags, mut description) = (None, None, Vec::new(), None);
                for pair in named.pairs::<Value, Value>() {
                    let (key, value) = pair?;
                    let key = match key {
                        Value::String(s) => s.to_string_lossy(),
                        _ => return Err(raise("ERR named argument key given to redis.register_function is not a string")),
                    };
                    match (key.as_str(), value) {
                        ("function_name", Value::String(s)) => name = Some(s.to_string_lossy()),
                        ("function_name", _) => return Err(raise("ERR function_name argument given to redis.register_function must be a string")),
                        ("callback", Value::Function(f)) => callback = Some(f),
                        ("callback", _) => return Err(raise("ERR callback argument given to redis.register_function must be a function")),
                        ("description", Value::String(s)) => description = Some(s.to_string_lossy()),
                        ("description", _) => return Err(raise("ERR description argument given to redis.register_function must be a string")),
                        ("flags", Value::Table(list)) => {
                            for flag in list.sequence_values::<Value>() {
                                match flag? {
                                    Value::String(s) => flags.push(s.to_string_lossy()),
                                    _ => return Err(raise("ERR unknown flag given")),
                                }
                            }
                        }
                        ("flags", _) => return Err(raise("ERR flags argument to redis.register_function must be a table representing function flags")),
                        _ => return Err(raise("ERR unknown argument given to redis.register_function")),
                    }
                }
                let name = name.ok_or_else(|| raise("ERR redis.register_function must get a function name argument"))?;
                let callback = callback.ok_or_else(|| raise("ERR redis.register_function must get a callback argument"))?;
                (name, callback, flags, description)
            }
            [_] => {
                return Err(raise(
                    "ERR calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).",
                ));
            }
            [name, callback] => {
                let Value::String(name) = name else {
                    return Err(raise("ERR first argument to redis.register_function must be a string"));
                };
                let Value::Function(callback) = callback else {
                    return Err(raise("ERR second argument to redis.register_function must be a function"));
                };
                (name.to_string_lossy(), callback.clone(), Vec::new(), None)
            }
            _ => return Err(raise("ERR wrong number of arguments to redis.register_function")),
        };
        // Redis checks a function's name with its library-name rule and message.
        if !valid_name(&name) {
            return Err(raise(
                "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
            ));
        }
        let mut flags = ScriptFlags::default();
        for flag in &flag_names {
            match flag.as_str() {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "no-cluster" => flags.no_cluster = true,
                "allow-stale" | "allow-cross-slot-keys" => {}
                _ => return Err(raise("ERR unknown flag given")),
            }
        }
        let mut collector = collector.borrow_mut();
        let Some(registered) = collector.as_mut() else {
            return Err(raise(
                "ERR redis.register_function can only be called on FUNCTION LOAD command",
            ));
        };
        if registered.iter().any(|r| r.info.name == name) {
            return Err(raise("ERR Function already exists in the library"));
        }
        registered.push(Registered {
            info: FunctionInfo {
                name,
                description,
                flag_names,
                flags,
            },
            callback,
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lines_read_as_redis_reads_them() {
        assert_eq!(
            library_name(b"#!lua name=mylib\nreturn 1").unwrap(),
            "mylib"
        );
        assert_eq!(
            library_name(b"return 1").unwrap_err().to_string(),
            "ERR Missing library metadata"
        );
        assert_eq!(
            library_name(b"#!python name=x\n").unwrap_err().to_string(),
            "ERR Engine 'python' not found"
        );
        assert_eq!(
            library_name(b"#!lua\n").unwrap_err().to_string(),
            "ERR Library name was not given"
        );
        assert_eq!(
            library_name(b"#!lua name=a-b\n").unwrap_err().to_string(),
            "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
        );
        assert_eq!(
            library_name(b"#!lua name=x foo=bar\n")
                .unwrap_err()
                .to_string(),
            "ERR Invalid metadata value given: foo=bar"
        );
    }

    #[test]
    fn payloads_round_trip_and_damage_is_refused() {
        let mut libraries = Libraries::default();
        libraries.insert(Library {
            name: "a".into(),
            code: b"#!lua name=a\ncode".to_vec().into(),
            functions: vec![],
        });
        let payload = dump(&libraries);
        assert_eq!(
            undump(&payload).unwrap(),
            vec![b"#!lua name=a\ncode".to_vec()]
        );
        for cut in 0..payload.len() {
            assert!(undump(&payload[..cut]).is_err());
        }
        let mut flipped = payload.clone();
        flipped[5] ^= 1;
        assert!(undump(&flipped).is_err());
    }
}
