//! The gateway's configuration, in Sync Gateway's legacy JSON shape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Default public (application) listener address.
pub const DEFAULT_PUBLIC_INTERFACE: &str = "127.0.0.1:4984";
/// Default admin listener address.
pub const DEFAULT_ADMIN_INTERFACE: &str = "127.0.0.1:4985";
/// Default directory holding on-disk databases.
pub const DEFAULT_DATA_DIR: &str = "./ferrolite-data";
/// The database a configuration without `databases` serves.
pub const DEFAULT_DATABASE: &str = "db";

/// A configuration error: what is wrong, and where in the JSON.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON is malformed, has an unknown key or a value of the wrong type.
    #[error("configuration error at `{path}`: {message}")]
    Invalid {
        /// The JSON path of the offending value (`.` for the root).
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file (Sync Gateway 2.x "legacy" shape).
///
/// ```json
/// {
///   "interface": "127.0.0.1:4984",
///   "adminInterface": "127.0.0.1:4985",
///   "data_dir": "./ferrolite-data",
///   "databases": {
///     "userprofile": {
///       "users": {"GUEST": {"disabled": true}, "alice": {"password": "pass", "admin_channels": ["*"]}},
///       "revs_limit": 20
///     }
///   }
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public listener address (`"host:port"`, or `":port"` for every interface).
    #[serde(default)]
    pub interface: Option<String>,
    /// Admin listener address.
    #[serde(default, rename = "adminInterface")]
    pub admin_interface: Option<String>,
    /// Sync Gateway 3.x style `api` section (takes precedence over the legacy keys).
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Directory holding on-disk databases (ferrolite's own key; default `./ferrolite-data`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Accepted for compatibility with Sync Gateway tutorials; ignored.
    #[serde(default)]
    pub log: Option<Vec<String>>,
    /// The databases, by name.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
}

/// The `api` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Public listener address.
    #[serde(default)]
    pub public_interface: Option<String>,
    /// Admin listener address.
    #[serde(default)]
    pub admin_interface: Option<String>,
}

/// One database.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Users created at start (`GUEST` configures the anonymous user).
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Roles created at start.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
    /// How many generations of history each document keeps.
    #[serde(default)]
    pub revs_limit: Option<u32>,
    /// Stored only (ferrolite keeps conflicts as branches either way).
    #[serde(default)]
    pub allow_conflicts: Option<bool>,
    /// Delta sync settings: deltas are offered to clients only when enabled.
    #[serde(default)]
    pub delta_sync: Option<DeltaSyncConfig>,
    /// The sync function's time limit per call, in seconds (0 or absent: the default limit).
    #[serde(default)]
    pub javascript_timeout_secs: Option<u64>,
    /// The sync function's JavaScript source (default: `channel(doc.channels)`).
    #[serde(default)]
    pub sync: Option<String>,
    /// Sync Gateway's bucket server (e.g. `"walrus:"`): accepted and ignored.
    #[serde(default)]
    pub server: Option<String>,
    /// Sync Gateway's bucket name: accepted and ignored.
    #[serde(default)]
    pub bucket: Option<String>,
}

/// `delta_sync`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaSyncConfig {
    /// Whether delta sync is enabled.
    #[serde(default)]
    pub enabled: bool,
}

/// One user in `users`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The password (not used for `GUEST`).
    #[serde(default)]
    pub password: Option<String>,
    /// Channels granted directly.
    #[serde(default)]
    pub admin_channels: Vec<String>,
    /// Roles granted directly.
    #[serde(default)]
    pub admin_roles: Vec<String>,
    /// A disabled user cannot log in; `GUEST` is disabled unless this is `false`.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Optional e-mail address.
    #[serde(default)]
    pub email: Option<String>,
}

/// One role in `roles`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Channels the role's members may read.
    #[serde(default)]
    pub admin_channels: Vec<String>,
}

impl GatewayConfig {
    /// Parses a configuration; errors name the JSON path of the offending value.
    pub fn from_json(text: &str) -> Result<GatewayConfig, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config: GatewayConfig =
            serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError::Invalid {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        de.end().map_err(|e| ConfigError::Invalid {
            path: ".".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &std::path::Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        GatewayConfig::from_json(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.public_addr()?;
        self.admin_addr()?;
        for name in self.databases.keys() {
            if !valid_db_name(name) {
                return Err(ConfigError::Invalid {
                    path: format!("databases.{name}"),
                    message: "a database name is lowercase letters, digits and _$()+-/, starting with a letter".into(),
                });
            }
        }
        Ok(())
    }

    /// The public listener address: `api.public_interface`, else `interface`, else
    /// 127.0.0.1:4984.
    pub fn public_addr(&self) -> Result<SocketAddr, ConfigError> {
        match (&self.api, &self.interface) {
            (
                Some(ApiConfig {
                    public_interface: Some(a),
                    ..
                }),
                _,
            ) => parse_addr(a, "api.public_interface"),
            (_, Some(a)) => parse_addr(a, "interface"),
            _ => parse_addr(DEFAULT_PUBLIC_INTERFACE, "interface"),
        }
    }

    /// The admin listener address: `api.admin_interface`, else `adminInterface`, else
    /// 127.0.0.1:4985.
    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        match (&self.api, &self.admin_interface) {
            (
                Some(ApiConfig {
                    admin_interface: Some(a),
                    ..
                }),
                _,
            ) => parse_addr(a, "api.admin_interface"),
            (_, Some(a)) => parse_addr(a, "adminInterface"),
            _ => parse_addr(DEFAULT_ADMIN_INTERFACE, "adminInterface"),
        }
    }

    /// The databases to serve: the configured ones, or `db` when none is configured.
    pub fn effective_databases(&self) -> BTreeMap<String, DatabaseConfig> {
        if self.databases.is_empty() {
            let mut one = BTreeMap::new();
            one.insert(DEFAULT_DATABASE.to_owned(), DatabaseConfig::default());
            one
        } else {
            self.databases.clone()
        }
    }

    /// The data directory: `data_dir`, else `./ferrolite-data`.
    pub fn effective_data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }
}

fn valid_db_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+-".contains(c))
}

/// Parses `host:port`, or Sync Gateway's `:port` meaning every interface.
fn parse_addr(text: &str, path: &str) -> Result<SocketAddr, ConfigError> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    full.parse().map_err(|_| ConfigError::Invalid {
        path: path.to_owned(),
        message: format!("{text:?} is not an address of the form host:port"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = GatewayConfig::default();
        assert_eq!(c.public_addr().unwrap().to_string(), "127.0.0.1:4984");
        assert_eq!(c.admin_addr().unwrap().to_string(), "127.0.0.1:4985");
        assert_eq!(c.effective_databases().keys().collect::<Vec<_>>(), ["db"]);
        assert_eq!(c.effective_data_dir(), PathBuf::from("./ferrolite-data"));
    }

    #[test]
    fn legacy_shape() {
        let c = GatewayConfig::from_json(
            r#"{"interface":":4984","adminInterface":"127.0.0.1:4985","log":["*"],
                "databases":{"userprofile":{"server":"walrus:","bucket":"userprofile",
                  "users":{"GUEST":{"disabled":true},"alice":{"password":"pass","admin_channels":["a"]}},
                  "revs_limit":30,"allow_conflicts":false,"delta_sync":{"enabled":true},
                  "sync":"function(doc){channel(doc.channels);}"}}}"#,
        )
        .unwrap();
        assert_eq!(c.public_addr().unwrap().to_string(), "0.0.0.0:4984");
        let db = &c.databases["userprofile"];
        assert_eq!(db.revs_limit, Some(30));
        assert_eq!(db.users["alice"].admin_channels, ["a"]);
        assert_eq!(db.users["GUEST"].disabled, Some(true));
        assert!(db.delta_sync.as_ref().unwrap().enabled);
    }

    #[test]
    fn api_section_wins() {
        let c = GatewayConfig::from_json(
            r#"{"interface":"127.0.0.1:1","api":{"public_interface":"127.0.0.1:2","admin_interface":"127.0.0.1:3"}}"#,
        )
        .unwrap();
        assert_eq!(c.public_addr().unwrap().port(), 2);
        assert_eq!(c.admin_addr().unwrap().port(), 3);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e =
            GatewayConfig::from_json(r#"{"databases":{"db":{"users":{"alice":{"pasword":"x"}}}}}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("databases.db.users.alice"), "{e}");
        assert!(e.contains("pasword"), "{e}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = GatewayConfig::from_json(r#"{"databases":{"db":{"revs_limit":"many"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("databases.db.revs_limit"), "{e}");
    }

    #[test]
    fn bad_address_and_syntax() {
        let e = GatewayConfig::from_json(r#"{"interface":"nowhere"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`interface`"), "{e}");
        assert!(GatewayConfig::from_json("{").is_err());
        assert!(GatewayConfig::from_json(r#"{"databases":{"Bad":{}}}"#).is_err());
    }
}
