//! The CLI's config file, and how a command finds its servers and credential.
//!
//! ```text
//!   --master / --server / --insecure / --config          flags
//!        │ else
//!   STRATA_MASTER / STRATA_SERVER / STRATA_INSECURE / STRATA_CONFIG   environment (clap)
//!        │ else
//!   the config file: $STRATA_CONFIG, else $XDG_CONFIG_HOME/strata/config.json,
//!                    else $HOME/.config/strata/config.json
//!        │ else
//!   127.0.0.1:5050 (master), 127.0.0.1:8080 (App API)
//! ```
//!
//! The file (JSON, every field optional; `strata local` writes one, mode 0600):
//! `{"master": "127.0.0.1:5050", "apps": "127.0.0.1:8080", "ca_file": "/path/ca.crt",
//! "principal": "admin", "secret": "..."}`. With it the CLI talks TLS to every server,
//! trusting only the cluster CA in `ca_file`, and sends the credential. Without it the
//! CLI refuses to start unless told `--insecure` (plain text, no credential: a cluster
//! started with `--insecure`).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_security::{ClientTls, Credential};

/// The master's address when nothing names it.
pub const DEFAULT_MASTER: &str = "127.0.0.1:5050";
/// The App API's address when nothing names it.
pub const DEFAULT_APPS: &str = "127.0.0.1:8080";

/// The config file's content.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The master, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The App API (`strata serve`), `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<String>,
    /// The cluster CA (PEM), the only one trusted; relative to the file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Whose credential: `admin` when only a secret is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for CliConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliConfig")
            .field("master", &self.master)
            .field("apps", &self.apps)
            .field("ca_file", &self.ca_file)
            .field("principal", &self.principal)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Why the CLI cannot work out how to reach its servers.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no CLI config found at {}; start `strata local` (it writes one) or write one \
         ({{\"master\": \"HOST:5050\", \"apps\": \"HOST:8080\", \"ca_file\": \"/path/ca.crt\", \
         \"principal\": \"admin\", \"secret\": \"...\"}}), or pass --insecure \
         (or STRATA_INSECURE=1) for a master started with --insecure",
        paths(.searched)
    )]
    Missing { searched: Vec<PathBuf> },
    #[error(
        "cannot find the CLI config: neither STRATA_CONFIG, XDG_CONFIG_HOME nor HOME is set; \
         set STRATA_CONFIG=FILE, or pass --insecure for a master started with --insecure"
    )]
    Nowhere,
    #[error("cannot read the CLI config {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the CLI config {path} names no ca_file: the CLI talks TLS and trusts only the cluster's CA \
         (the master's work dir has it: tls/ca.crt); add \"ca_file\", or pass --insecure for a master \
         started with --insecure"
    )]
    NoCa { path: PathBuf },
    #[error("cannot read the CA file {ca} named by the CLI config {path}: {reason}")]
    Ca {
        path: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    #[error("the CLI config {path} has a principal but no secret")]
    NoSecret { path: PathBuf },
}

fn paths(list: &[PathBuf]) -> String {
    list.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Where the config file is looked for, given the environment (`env("HOME")`, ...):
/// `$STRATA_CONFIG` (or `--config`) alone when set, else the default path.
pub fn search_path(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = env("STRATA_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    default_path(env)
}

/// `$XDG_CONFIG_HOME/strata/config.json`, else `$HOME/.config/strata/config.json`:
/// where `strata local` writes the config and the CLI looks for it.
pub fn default_path(env: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, ConfigError> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(xdg) = non_empty("XDG_CONFIG_HOME") {
        return Ok(xdg.join("strata/config.json"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".config/strata/config.json"));
    }
    Err(ConfigError::Nowhere)
}

/// The process environment, for [`search_path`] and [`default_path`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Reads the config at `path`; `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<CliConfig>, ConfigError> {
    let unreadable = |reason: String| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let config: CliConfig = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if config.secret.is_some()
        && let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: the CLI config {} holds a secret and others may read it: chmod 600 it",
            path.display()
        );
    }
    Ok(Some(config))
}

/// What the command line said (flags, with clap's environment fallbacks applied).
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub master: Option<String>,
    pub apps: Option<String>,
    pub insecure: bool,
    pub config: Option<PathBuf>,
}

/// Where the CLI's servers are and how to talk to them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The master, `host:port` (or a URI as given).
    pub master: String,
    /// The App API, `host:port` (or a URI as given).
    pub apps: String,
    /// TLS and the credential; plain text with `--insecure`.
    pub tls: ClientTls,
}

impl Settings {
    /// Works the settings out from the command line, the config file and the defaults.
    pub fn resolve(
        choices: &Choices,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Settings, ConfigError> {
        let path = match search_path(choices.config.as_deref(), env) {
            Ok(path) => Some(path),
            // With --insecure the file is optional, and so is a place to look for it.
            Err(ConfigError::Nowhere) if choices.insecure => None,
            Err(e) => return Err(e),
        };
        let config = match &path {
            Some(path) => load(path)?,
            None => None,
        };
        let file = config.clone().unwrap_or_default();
        let master = pick(
            choices.master.as_deref(),
            file.master.as_deref(),
            DEFAULT_MASTER,
        );
        let apps = pick(choices.apps.as_deref(), file.apps.as_deref(), DEFAULT_APPS);
        if choices.insecure {
            return Ok(Settings {
                master,
                apps,
                tls: ClientTls::insecure(),
            });
        }
        let (Some(path), Some(config)) = (path, config) else {
            let searched = search_path(choices.config.as_deref(), env)
                .into_iter()
                .collect();
            return Err(ConfigError::Missing { searched });
        };
        let tls = client_tls(&path, &config)?;
        Ok(Settings { master, apps, tls })
    }
}

/// The first non-empty of what was given and what the file says, else `default`.
fn pick(given: Option<&str>, file: Option<&str>, default: &str) -> String {
    given
        .or(file)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// The TLS settings of a config read from `path`: its CA (required) and credential.
fn client_tls(path: &Path, config: &CliConfig) -> Result<ClientTls, ConfigError> {
    let ca = config.ca_file.as_ref().ok_or_else(|| ConfigError::NoCa {
        path: path.to_path_buf(),
    })?;
    let ca = match path.parent() {
        Some(dir) if ca.is_relative() => dir.join(ca),
        _ => ca.clone(),
    };
    let ca_pem = std::fs::read_to_string(&ca).map_err(|e| ConfigError::Ca {
        path: path.to_path_buf(),
        ca: ca.clone(),
        reason: e.to_string(),
    })?;
    let credential = match (&config.principal, &config.secret) {
        (principal, Some(secret)) => Some(Credential::new(
            principal
                .clone()
                .unwrap_or_else(|| strata_security::credentials::ADMIN.to_string()),
            secret.clone(),
        )),
        (Some(_), None) => {
            return Err(ConfigError::NoSecret {
                path: path.to_path_buf(),
            });
        }
        (None, None) => None,
    };
    Ok(ClientTls {
        ca_pem: Some(ca_pem),
        identity: None,
        credential,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn the_config_is_looked_for_where_the_environment_says() {
        let (a, b, c) = (
            Path::new("/a.json"),
            Path::new("/xdg"),
            Path::new("/home/u"),
        );
        let all = env(&[("STRATA_CONFIG", a), ("XDG_CONFIG_HOME", b), ("HOME", c)]);
        assert_eq!(search_path(None, &all).unwrap(), a);
        assert_eq!(
            search_path(Some(Path::new("/flag.json")), &all).unwrap(),
            Path::new("/flag.json")
        );
        let xdg = env(&[("XDG_CONFIG_HOME", b), ("HOME", c)]);
        assert_eq!(
            search_path(None, &xdg).unwrap(),
            Path::new("/xdg/strata/config.json")
        );
        let home = env(&[("HOME", c)]);
        assert_eq!(
            search_path(None, &home).unwrap(),
            Path::new("/home/u/.config/strata/config.json")
        );
        assert!(matches!(
            search_path(None, &env(&[])),
            Err(ConfigError::Nowhere)
        ));
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "PEM").unwrap();
        let path = dir.path().join("strata/config.json");
        write(
            &path,
            r#"{"master": "m:1", "apps": "a:2", "ca_file": "../ca.crt", "secret": "0123456789abcdef"}"#,
        );
        let env = env(&[("HOME", Path::new("/nowhere")), ("STRATA_CONFIG", &path)]);
        let settings = Settings::resolve(&Choices::default(), &env).unwrap();
        assert_eq!(
            (settings.master.as_str(), settings.apps.as_str()),
            ("m:1", "a:2")
        );
        assert_eq!(settings.tls.ca_pem.as_deref(), Some("PEM"));
        let credential = settings.tls.credential.unwrap();
        assert_eq!(credential.principal, "admin");
        assert_eq!(credential.secret, "0123456789abcdef");

        let choices = Choices {
            master: Some("flag:3".into()),
            ..Default::default()
        };
        let settings = Settings::resolve(&choices, &env).unwrap();
        assert_eq!(
            (settings.master.as_str(), settings.apps.as_str()),
            ("flag:3", "a:2")
        );

        // --insecure: the file's addresses, but no TLS and no credential.
        let choices = Choices {
            insecure: true,
            ..Default::default()
        };
        let settings = Settings::resolve(&choices, &env).unwrap();
        assert_eq!(settings.master, "m:1");
        assert!(!settings.tls.is_tls());
        assert!(settings.tls.credential.is_none());
    }

    #[test]
    fn without_a_config_only_insecure_works() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(&[("HOME", dir.path())]);
        let err = Settings::resolve(&Choices::default(), &env).unwrap_err();
        let text = err.to_string();
        let expected = dir.path().join(".config/strata/config.json");
        assert!(
            text.starts_with(&format!("no CLI config found at {}; ", expected.display())),
            "{text}"
        );
        assert!(
            text.contains("strata local") && text.contains("--insecure"),
            "{text}"
        );

        let choices = Choices {
            insecure: true,
            ..Default::default()
        };
        let settings = Settings::resolve(&choices, &env).unwrap();
        assert_eq!(
            (settings.master.as_str(), settings.apps.as_str()),
            (DEFAULT_MASTER, DEFAULT_APPS)
        );
        assert!(!settings.tls.is_tls());
        // Nowhere to look at all is fine with --insecure too.
        assert!(Settings::resolve(&choices, &|_: &str| None).is_ok());
    }

    #[test]
    fn a_config_that_cannot_be_used_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let env = env(&[("STRATA_CONFIG", &path)]);
        let resolve = |text: &str| {
            write(&path, text);
            Settings::resolve(&Choices::default(), &env)
                .unwrap_err()
                .to_string()
        };
        let text = resolve(r#"{"master": "m:1"}"#);
        assert!(text.contains("names no ca_file"), "{text}");
        let text = resolve(r#"{"ca_file": "/no/such/ca.crt"}"#);
        assert!(
            text.starts_with("cannot read the CA file /no/such/ca.crt named by the CLI config"),
            "{text}"
        );
        let text = resolve(r#"{"mastr": "m:1"}"#);
        assert!(
            text.starts_with(&format!(
                "cannot read the CLI config {}: unknown field",
                path.display()
            )),
            "{text}"
        );
        std::fs::write(dir.path().join("ca.crt"), "PEM").unwrap();
        let text = resolve(r#"{"ca_file": "ca.crt", "principal": "ops"}"#);
        assert!(text.contains("a principal but no secret"), "{text}");
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let config = CliConfig {
            secret: Some("very-secret-value".into()),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("very-secret-value"));
    }
}
