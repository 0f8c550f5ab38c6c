//! The socket file is 0600 and a created directory 0755 whatever the umask (its own test binary: the umask is
//! process-wide, so no other test runs beside this one).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ghost_api::ApiServer;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn modes_do_not_depend_on_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    for (umask, name) in [(0o000, "open"), (0o077, "closed")] {
        let run = dir.path().join(name);
        let path = run.join("vm.sock");
        // SAFETY: umask has no preconditions; this binary runs no other test.
        let old = unsafe { libc::umask(umask) };
        let server = ApiServer::bind(&path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let _server = server.unwrap();
        assert_eq!(mode(&path), 0o600, "socket under umask {umask:o}");
        assert_eq!(mode(&run), 0o755, "directory under umask {umask:o}");
    }
}
