//! Helpers for the operations tests (issue 7).

use std::path::Path;
use std::process::Command;

/// Run `ringmq check-config FILE`: (exit code, stdout, stderr).
pub fn check_config(file: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run ringmq check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
