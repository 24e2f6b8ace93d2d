//! Command-line configuration, parsed by hand.

/// The demo's usage text (`--help`).
pub const USAGE: &str = "\
Usage: tbone-dispatch-demo [--port N] [--mongo mongodb://HOST:PORT[/DB]]
                           [--redis redis://HOST:PORT/] [--channel NAME]

A full-duplex chat: a REST resource at /api/entries/ whose writes reach every
browser connected to /ws/, and a page at / that uses both.

Options:
  --port N        port on 127.0.0.1 (default 8000; 0 picks a free one)
  --mongo URI     store entries in MongoDB and share events through a
                  MongoChannel, so several instances on one database see
                  each other's writes (database from the URI's path,
                  default tbone_demo). Without it: in memory, one instance.
  --redis URL     share events through a RedisChannel (a Redis stream) on
                  this server instead; entries stay where they are (in
                  memory, or in MongoDB with --mongo)
  --channel NAME  the channel's name (default pubsub)
  -h, --help      print this help

Logging: RUST_LOG (default info).";

/// Default port.
pub const DEFAULT_PORT: u16 = 8000;
/// Default channel name, as in TBone.
pub const DEFAULT_CHANNEL: &str = "pubsub";
/// Default database in MongoDB mode.
pub const DEFAULT_DATABASE: &str = "tbone_demo";
/// Collection of entries in MongoDB mode.
pub const DEFAULT_ENTRIES_COLLECTION: &str = "entries";

/// How to run the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Name of the channel the resource events are published on.
    pub channel: String,
    /// MongoDB mode; `None` is the embedded (in-memory) mode.
    pub mongo: Option<MongoConfig>,
    /// Events through a RedisChannel on this server (`redis://...`);
    /// `None`: through the mode's own channel.
    pub redis: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: DEFAULT_PORT,
            channel: DEFAULT_CHANNEL.to_string(),
            mongo: None,
            redis: None,
        }
    }
}

/// Where MongoDB mode keeps entries and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MongoConfig {
    /// Connection string, passed to the driver as given.
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Collection of entries (default `entries`).
    pub entries: String,
    /// Capped collection of channel events; `None` is TBone's
    /// `tbone_channel_<channel name>`. Instances share events when they
    /// use the same capped collection.
    pub events: Option<String>,
}

impl MongoConfig {
    /// MongoDB at `uri`; the database is the URI's path, or
    /// [`DEFAULT_DATABASE`].
    pub fn from_uri(uri: &str) -> Result<MongoConfig, ArgsError> {
        let rest = uri
            .strip_prefix("mongodb://")
            .or_else(|| uri.strip_prefix("mongodb+srv://"))
            .ok_or_else(|| ArgsError::BadMongoUri(redact_uri(uri)))?;
        let (hosts, path) = match rest.split_once('/') {
            Some((hosts, path)) => (hosts, path),
            None => (rest.split('?').next().unwrap_or(rest), ""),
        };
        if hosts.is_empty() {
            return Err(ArgsError::BadMongoUri(redact_uri(uri)));
        }
        let database = path.split('?').next().unwrap_or("");
        let database = if database.is_empty() {
            DEFAULT_DATABASE
        } else {
            database
        };
        Ok(MongoConfig {
            uri: uri.to_string(),
            database: database.to_string(),
            entries: DEFAULT_ENTRIES_COLLECTION.to_string(),
            events: None,
        })
    }
}

/// `uri` with any password hidden (`mongodb://user:***@host/db`), for
/// messages and logs.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return uri.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the server.
    Run(Config),
    /// Print [`USAGE`] and exit.
    Help,
}

/// A command line that cannot be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// An option this program does not have.
    #[error("unknown argument `{0}`")]
    Unknown(String),
    /// An option without its value.
    #[error("`{0}` needs a value")]
    MissingValue(&'static str),
    /// `--port` with something other than 0..=65535.
    #[error("`--port` must be a number from 0 to 65535, not `{0}`")]
    BadPort(String),
    /// `--mongo` with something that is not a MongoDB URI.
    #[error("`--mongo` must look like mongodb://HOST:PORT[/DB], not `{0}`")]
    BadMongoUri(String),
    /// `--redis` with something that is not a Redis URL.
    #[error("`--redis` must look like redis://HOST:PORT/, not `{0}`")]
    BadRedisUrl(String),
    /// `--channel` with an empty name.
    #[error("`--channel` must not be empty")]
    EmptyChannel,
}

impl Command {
    /// Parses the arguments after the program name: `--port N`,
    /// `--mongo URI`, `--redis URL`, `--channel NAME` (each also as `--opt=value`),
    /// `-h`/`--help`.
    pub fn parse<I, S>(args: I) -> Result<Command, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = Config::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => {
                    (name.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = |option: &'static str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(ArgsError::MissingValue(option))
            };
            match name.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "--port" => {
                    let port = value("--port")?;
                    config.port = port.parse().map_err(|_| ArgsError::BadPort(port))?;
                }
                "--mongo" => config.mongo = Some(MongoConfig::from_uri(&value("--mongo")?)?),
                "--redis" => {
                    let url = value("--redis")?;
                    if !url.starts_with("redis://") || url.len() == "redis://".len() {
                        return Err(ArgsError::BadRedisUrl(redact_uri(&url)));
                    }
                    config.redis = Some(url);
                }
                "--channel" => {
                    config.channel = value("--channel")?;
                    if config.channel.is_empty() {
                        return Err(ArgsError::EmptyChannel);
                    }
                }
                _ => return Err(ArgsError::Unknown(arg)),
            }
        }
        Ok(Command::Run(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match Command::parse(args.iter().copied()) {
            Ok(Command::Run(config)) => config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(run(&[]), Config::default());
        assert_eq!(Config::default().port, 8000);
        assert_eq!(Config::default().channel, "pubsub");
    }

    #[test]
    fn options_with_separate_or_inline_values() {
        assert_eq!(run(&["--port", "0"]).port, 0);
        assert_eq!(run(&["--port=9001"]).port, 9001);
        assert_eq!(run(&["--channel", "room"]).channel, "room");
        let mongo = run(&["--mongo", "mongodb://127.0.0.1:27017"])
            .mongo
            .unwrap();
        assert_eq!(mongo.database, "tbone_demo");
        assert_eq!(mongo.uri, "mongodb://127.0.0.1:27017");
        let mongo = run(&["--mongo=mongodb://h:1,h:2/chat?replicaSet=rs"])
            .mongo
            .unwrap();
        assert_eq!(mongo.database, "chat");
        let mongo = run(&["--mongo", "mongodb://h:1/?w=1"]).mongo.unwrap();
        assert_eq!(mongo.database, "tbone_demo");
        let mongo = run(&["--mongo", "mongodb://h:1?w=1"]).mongo.unwrap();
        assert_eq!(mongo.database, "tbone_demo");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_uri("mongodb://ann:secret@h:1/db?w=1"),
            "mongodb://ann:***@h:1/db?w=1"
        );
        assert_eq!(redact_uri("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(redact_uri("mongodb://h:1/a@b"), "mongodb://h:1/a@b");
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(Command::parse(["-h"]), Ok(Command::Help));
        assert_eq!(Command::parse(["--port", "1", "--help"]), Ok(Command::Help));
        assert_eq!(
            Command::parse(["--port"]),
            Err(ArgsError::MissingValue("--port"))
        );
        assert_eq!(
            Command::parse(["--port", "65536"]),
            Err(ArgsError::BadPort("65536".into()))
        );
        assert_eq!(
            Command::parse(["--mongo", "http://x"]),
            Err(ArgsError::BadMongoUri("http://x".into()))
        );
        assert_eq!(
            Command::parse(["--mongo", "mongodb:///db"]),
            Err(ArgsError::BadMongoUri("mongodb:///db".into()))
        );
        assert_eq!(
            Command::parse(["--verbose"]),
            Err(ArgsError::Unknown("--verbose".into()))
        );
        assert_eq!(Command::parse(["--channel="]), Err(ArgsError::EmptyChannel));
        assert_eq!(
            Command::parse(["--redis", "mongodb://h:1"]),
            Err(ArgsError::BadRedisUrl("mongodb://h:1".into()))
        );
    }

    #[test]
    fn redis_events_beside_either_storage() {
        let config = run(&["--redis", "redis://127.0.0.1:6379/"]);
        assert_eq!(config.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
        assert_eq!(config.mongo, None);
        let both = run(&["--redis=redis://h:1/", "--mongo", "mongodb://h:2"]);
        assert_eq!(both.redis.as_deref(), Some("redis://h:1/"));
        assert!(both.mongo.is_some());
    }
}
