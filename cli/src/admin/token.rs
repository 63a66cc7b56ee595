//! The admin API's bearer token: `m2m certs init` writes a random one to [`TOKEN_FILE`] in the
//! certificates folder (mode 0600 on Unix); `m2m node` and the client commands (`m2m status`,
//! `m2m session`) read it from there, from a file named on the command line, or from
//! [`TOKEN_ENV`]. A token is never taken as a command-line value: every user on the host sees
//! the command lines of every process.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The token's file name in the certificates folder.
pub(crate) const TOKEN_FILE: &str = "admin.token";
/// The environment variable holding a token (its value, not a path).
pub(crate) const TOKEN_ENV: &str = "M2M_ADMIN_TOKEN";
/// Random bytes in a new token (written as hex).
const TOKEN_BYTES: usize = 32;

/// Where the token is in a certificates folder.
pub(crate) fn in_certs(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// Writes a new random token to `dir/admin.token` unless that file exists (an existing token
/// is kept, as the certificates are). Returns whether it wrote one.
pub(crate) fn ensure(dir: &Path) -> anyhow::Result<bool> {
    let path = in_certs(dir);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = match opts.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).context("no randomness for the admin token")?;
    let mut text = bytes.iter().fold(String::with_capacity(TOKEN_BYTES * 2 + 1), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    text.push('\n');
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// Reads a token file: its text without surrounding whitespace, which must not be empty.
pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "the admin token file {} is empty", path.display());
    Ok(token.to_owned())
}

/// The token a node serves with: `file` (--admin-token-file), else [`TOKEN_ENV`], else
/// [`TOKEN_FILE`] in the certificates folder `certs`, which must then exist. None when
/// `no_auth` (--admin-no-auth), or when no token is given and there is no certificates folder
/// (an --insecure node).
pub(crate) fn for_node(
    no_auth: bool,
    file: Option<&Path>,
    certs: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    if no_auth {
        return Ok(None);
    }
    if let Some(f) = file {
        return read_warning_if_exposed(f).map(Some);
    }
    if let Some(t) = from_env() {
        return Ok(Some(t));
    }
    let Some(dir) = certs else { return Ok(None) };
    let file = in_certs(dir);
    anyhow::ensure!(
        file.exists(),
        "no admin token: {} does not exist. Run `m2m certs init` again (it adds the token and keeps \
         the certificates), give --admin-token-file FILE or set {TOKEN_ENV}, or serve the admin API \
         without a token with --admin-no-auth",
        file.display()
    );
    read_warning_if_exposed(&file).map(Some)
}

/// The token a client sends (`m2m status`, `m2m session`): `file` (--token-file), else
/// [`TOKEN_FILE`] in `certs` (--certs), else [`TOKEN_ENV`].
pub(crate) fn for_client(file: Option<&Path>, certs: Option<&Path>) -> anyhow::Result<Option<String>> {
    match (file, certs) {
        (Some(f), _) => read(f).map(Some),
        (None, Some(dir)) => read(&in_certs(dir)).map(Some),
        (None, None) => Ok(from_env()),
    }
}

/// Reads a token file, printing a warning when other users can read it.
fn read_warning_if_exposed(path: &Path) -> anyhow::Result<String> {
    let token = read(path)?;
    if let Some(w) = exposure(path) {
        eprintln!("warning: {w}");
    }
    Ok(token)
}

/// The token in [`TOKEN_ENV`], when set and not blank.
fn from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A warning when the token file can be read by users other than its owner.
fn exposure(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| {
            format!(
                "the admin token file {} has mode {:o}: other users can read it (chmod 600 it)",
                path.display(),
                mode & 0o777
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_random_private_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(ensure(dir.path()).expect("writes"));
        let first = read(&in_certs(dir.path())).expect("reads");
        assert_eq!(first.len(), TOKEN_BYTES * 2, "{first}");
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        assert_eq!(exposure(&in_certs(dir.path())), None, "mode 0600");
        assert!(!ensure(dir.path()).expect("keeps"), "an existing token is kept");
        assert_eq!(read(&in_certs(dir.path())).expect("reads"), first);
        let other = tempfile::tempdir().expect("temp dir");
        assert!(ensure(other.path()).expect("writes"));
        assert_ne!(read(&in_certs(other.path())).expect("reads"), first, "tokens differ");
    }

    #[test]
    fn empty_and_missing_token_files_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t");
        assert!(read(&path).is_err());
        std::fs::write(&path, " \n").expect("write");
        assert!(format!("{:#}", read(&path).expect_err("empty")).contains("is empty"));
    }

    #[test]
    fn where_a_node_and_a_client_find_the_token() {
        let certs = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("temp dir");
        let file = other.path().join("t");
        std::fs::write(&file, "from-file\n").expect("write");
        let (dir, file) = (Some(certs.path()), Some(file.as_path()));
        assert_eq!(for_node(true, None, dir).expect("no auth"), None);
        if std::env::var_os(TOKEN_ENV).is_none() {
            let missing = for_node(false, None, dir).expect_err("no token in the folder");
            assert!(format!("{missing:#}").contains("m2m certs init"), "{missing:#}");
            assert_eq!(for_node(false, None, None).expect("insecure"), None);
            assert_eq!(for_client(None, None).expect("none"), None);
        }
        assert!(ensure(certs.path()).expect("writes"));
        let in_folder = read(&in_certs(certs.path())).expect("reads");
        assert_eq!(for_node(false, file, dir).expect("file").as_deref(), Some("from-file"));
        assert_eq!(for_client(file, dir).expect("file").as_deref(), Some("from-file"));
        assert_eq!(for_client(None, dir).expect("folder"), Some(in_folder.clone()));
        if std::env::var_os(TOKEN_ENV).is_none() {
            assert_eq!(for_node(false, None, dir).expect("folder"), Some(in_folder));
        }
    }
}
