//! TLS material of a `comm: "tls"` server entry: where its files are and
//! loading them into a [`TlsConfig`] before any port is opened.
//!
//! A relative `certfile`, `keyfile` or `cafile` is looked up first in the
//! directory of the JSON file (when the configuration came from a file),
//! then in the working directory (as pymodbus, which hands the path to
//! Python's `ssl` as it is). An absolute path is used as it is.

use crate::error::ConfigError;
use coilwork_tokio::tls::{TlsClientAuth, TlsConfig, TlsError, load_ca_roots, load_certificates, load_private_key};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a configured file is: the first candidate that exists, else the
/// first candidate (for the error), plus the candidates tried.
fn resolve(file: &str, base_dir: Option<&Path>) -> (PathBuf, Vec<PathBuf>) {
    let path = Path::new(file);
    let mut candidates = Vec::new();
    if path.is_relative()
        && let Some(dir) = base_dir
    {
        candidates.push(dir.join(path));
    }
    candidates.push(path.to_path_buf());
    candidates.dedup();
    let found = candidates
        .iter()
        .find(|p| p.exists())
        .or_else(|| candidates.first())
        .cloned()
        .unwrap_or_else(|| path.to_path_buf());
    (found, candidates)
}

/// Loads the server's TLS configuration; every error names the key (under
/// `server_list.{server}`), the value as written and the file read.
/// `password`: the entry has one (encrypted keys cannot be read; said in
/// the key's error).
pub(crate) fn load(
    server: &str,
    certfile: &str,
    keyfile: &str,
    cafile: Option<&str>,
    password: bool,
    base_dir: Option<&Path>,
) -> Result<TlsConfig, ConfigError> {
    let key = |k: &str| format!("server_list.{server}.{k}");
    let fail = |k: &str, value: &str, tried: &[PathBuf], e: TlsError| {
        let mut reason = e.to_string();
        if tried.len() > 1 {
            let list = tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            reason.push_str(&format!(" (looked for {list})"));
        }
        ConfigError::new(key(k), format!("{value:?}"), reason)
    };
    let (cert_path, cert_tried) = resolve(certfile, base_dir);
    let chain = load_certificates(&cert_path).map_err(|e| fail("certfile", certfile, &cert_tried, e))?;
    let (key_path, key_tried) = resolve(keyfile, base_dir);
    let private = load_private_key(&key_path).map_err(|e| {
        let mut err = fail("keyfile", keyfile, &key_tried, e);
        if password {
            err.reason
                .push_str("; `password` is not used: encrypted keys are not supported, give a decrypted key");
        }
        err
    })?;
    let client_auth = match cafile {
        Some(ca) => {
            let (ca_path, ca_tried) = resolve(ca, base_dir);
            let roots = load_ca_roots(&ca_path).map_err(|e| fail("cafile", ca, &ca_tried, e))?;
            TlsClientAuth::Required(Arc::new(roots))
        }
        None => TlsClientAuth::None,
    };
    TlsConfig::new(chain, private, client_auth).map_err(|e| match e {
        TlsError::Config(source) => ConfigError::new(
            key("certfile"),
            format!("{certfile:?}"),
            format!(
                "certificate {} and key {} cannot be used together: {source}",
                cert_path.display(),
                key_path.display()
            ),
        ),
        other => fail("cafile", cafile.unwrap_or_default(), &[], other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_prefer_the_json_directory_then_the_working_directory() {
        let dir = std::env::temp_dir().join(format!("coilwork-sim-tls-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("here.pem"), "x").unwrap();
        let (p, tried) = resolve("here.pem", Some(&dir));
        assert_eq!(p, dir.join("here.pem"));
        assert_eq!(tried, vec![dir.join("here.pem"), PathBuf::from("here.pem")]);
        // Not in the JSON directory; Cargo.toml is in the working directory of tests.
        let (p, _) = resolve("Cargo.toml", Some(&dir));
        assert_eq!(p, PathBuf::from("Cargo.toml"));
        // Found nowhere: the JSON directory's path is reported first.
        let (p, tried) = resolve("none.pem", Some(&dir));
        assert_eq!(p, dir.join("none.pem"));
        assert_eq!(tried.len(), 2);
        // Absolute: as written.
        let abs = dir.join("here.pem");
        let (p, tried) = resolve(abs.to_str().unwrap(), Some(Path::new("/elsewhere")));
        assert_eq!((p, tried.len()), (abs, 1));
        let (p, tried) = resolve("x.pem", None);
        assert_eq!((p, tried.len()), (PathBuf::from("x.pem"), 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
