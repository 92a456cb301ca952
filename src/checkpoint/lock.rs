//! One writer per run directory: `train` holds an exclusive `flock` on `RUN_DIR/.lock` for as
//! long as it runs, so a second `train --resume` on the same directory is refused instead of
//! interleaving checkpoints. The kernel drops the lock when the process ends, SIGKILL included,
//! so a killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// Held while it lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the lock of `dir` (which must exist), or says who holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(Error::Refused {
                    path: dir.to_path_buf(),
                    msg: "another scalenet process is training in this run directory (it holds .lock); wait for it or stop it first".into(),
                });
            }
            return Err(Error::io(&path, err));
        }
    }
    Ok(DirLock { _file: file })
}
