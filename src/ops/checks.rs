//! What every configuration section does the same way: report its failed checks, and place its
//! relative paths under the data directory.

use std::path::{Path, PathBuf};

/// The messages of the checks that failed, in order (each check: whether it holds, and what to
/// say when it does not — key names as in the file).
pub fn failed(checks: &[(bool, &str)]) -> Vec<String> {
    checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, msg)| (*msg).to_string())
        .collect()
}

/// `path`, under `data_dir` when it is relative.
pub fn under_data_dir(data_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        data_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checks_and_paths() {
        assert_eq!(
            failed(&[(true, "a"), (false, "b must be > 0"), (false, "c")]),
            vec!["b must be > 0".to_string(), "c".to_string()]
        );
        assert!(failed(&[(true, "a")]).is_empty());
        assert_eq!(
            under_data_dir(Path::new("/d"), Path::new("x.db")),
            PathBuf::from("/d/x.db")
        );
        assert_eq!(
            under_data_dir(Path::new("/d"), Path::new("/abs/x.db")),
            PathBuf::from("/abs/x.db")
        );
    }
}
