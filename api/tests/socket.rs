//! The API server and client over real sockets in a temporary directory.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ghost_api::fake::FakeVm;
use ghost_api::{
    list_vms, Action, ApiClient, ApiError, ApiServer, ApiThread, ClientError, ErrorBody, VmOps,
    VmState,
};

fn serve(path: &Path) -> (Arc<FakeVm>, ApiThread) {
    let vm = Arc::new(FakeVm::new());
    let server = ApiServer::bind(path).expect("bind");
    let api = server.serve(vm.clone()).expect("serve");
    (vm, api)
}

/// Sends `request` raw and reads the whole answer (until the server closes).
fn raw(path: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before taking everything (413, 431, garbage).
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // Unread request bytes make the close a reset, after the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8(out).expect("UTF-8 answer")
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|a| a.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

fn error_of(answer: &str) -> String {
    let body = answer.split_once("\r\n\r\n").expect("a head").1;
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("{e}: {body:?}"))
        .error
}

#[test]
fn client_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let (vm, api) = serve(&path);

    let info = ApiClient::connect(&path).unwrap().get_info().unwrap();
    assert_eq!(info, vm.info());
    assert_eq!(info.pid, std::process::id());

    // One client, several requests: each on its own connection.
    let mut client = ApiClient::connect(&path).unwrap();
    client.put(Action::Pause).unwrap();
    assert_eq!(client.get_info().unwrap().state, VmState::Paused);
    match client.put(Action::Pause) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 409);
            assert_eq!(message, "pause: the VM is already paused");
        }
        other => panic!("{other:?}"),
    }
    client.put(Action::Resume).unwrap();
    client.put(Action::Shutdown).unwrap();
    client.put(Action::Stop).unwrap();
    assert_eq!(vm.state(), VmState::Stopping);
    assert_eq!(
        vm.calls(),
        [
            Action::Pause,
            Action::Resume,
            Action::Shutdown,
            Action::Stop
        ]
    );
    api.shutdown();
    assert!(!path.exists(), "the socket file is removed");
}

#[test]
fn curl_talks_to_the_api() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("note: curl is not installed; skipping the curl test (apt-get install curl)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let (vm, _api) = serve(&path);
    let curl = |args: &[&str]| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--unix-socket"])
            .arg(&path)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), body.to_owned())
    };

    let (code, body) = curl(&["http://localhost/vm"]);
    assert_eq!(code, 200);
    let info: ghost_api::VmInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(info, vm.info());

    assert_eq!(curl(&["-X", "PUT", "http://localhost/vm/pause"]).0, 204);
    let (code, body) = curl(&["-X", "PUT", "http://localhost/vm/pause"]);
    assert_eq!(code, 409);
    assert!(body.contains("already paused"), "{body}");
    assert_eq!(
        curl(&["-X", "PUT", "-d", "{}", "http://localhost/vm/resume"]).0,
        204
    );
    assert_eq!(curl(&["-X", "PUT", "http://localhost/vm/shutdown"]).0, 202);

    let (code, body) = curl(&["-i", "-X", "POST", "http://localhost/vm"]);
    assert_eq!(code, 405);
    assert!(body.contains("Allow: GET\r\n"), "{body}");
    assert_eq!(curl(&["http://localhost/nope"]).0, 404);
    let (code, body) = curl(&["-X", "PUT", "-d", "not json", "http://localhost/vm/stop"]);
    assert_eq!(code, 400);
    assert!(body.starts_with(r#"{"error":"invalid JSON body"#), "{body}");
    let chunked = [
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        "{}",
        "http://localhost/vm/stop",
    ];
    assert_eq!(curl(&chunked).0, 411);
    assert_eq!(curl(&["--http1.0", "http://localhost/vm"]).0, 400);
    assert_eq!(vm.state(), VmState::ShuttingDown);
}

#[test]
fn socket_is_0600_and_a_missing_directory_is_created_0755() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run/ghost-vmm");
    let path = run.join("vm.sock");
    let server = ApiServer::bind(&path).unwrap();
    let md = fs::symlink_metadata(&path).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(md.uid(), unsafe { libc::geteuid() });
    assert_eq!(
        fs::metadata(&run).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(server.path(), path);
    drop(server);
    assert!(!path.exists());
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    // A VMM that died: its socket file stays, nobody listens.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    match ApiClient::connect(&path) {
        Err(e) => assert!(e.is_no_such_vm(), "{e}"),
        Ok(_) => panic!("connected to a stale socket"),
    }
    let (vm, _api) = serve(&path);
    assert_eq!(
        ApiClient::connect(&path).unwrap().get_info().unwrap(),
        vm.info()
    );
}

#[test]
fn a_live_socket_is_in_use_with_the_listeners_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    // Bound but not serving yet: the kernel still accepts connections for it.
    let first = ApiServer::bind(&path).unwrap();
    match ApiServer::bind(&path) {
        Err(ApiError::InUse { path: p, pid }) => {
            assert_eq!(p, path);
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("{other:?}"),
    }
    let err = ApiServer::bind(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("in use by pid {}", std::process::id())),
        "{err}"
    );
    // The failed attempts left the live socket alone, and it serves.
    let api = first.serve(Arc::new(FakeVm::new())).unwrap();
    ApiClient::connect(&path).unwrap().get_info().unwrap();
    api.shutdown();
    assert!(!path.exists());
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    fs::write(&path, "precious").unwrap();
    assert!(matches!(
        ApiServer::bind(&path),
        Err(ApiError::NotASocket { .. })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn drop_removes_only_our_own_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let server = ApiServer::bind(&path).unwrap();
    // Someone replaced the file (e.g. removed it and started another VM there).
    fs::remove_file(&path).unwrap();
    let other = UnixListener::bind(&path).unwrap();
    drop(server);
    assert!(path.exists(), "another process's socket was removed");
    drop(other);
}

#[test]
fn a_stalled_client_delays_others_only_until_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let vm = Arc::new(FakeVm::new());
    let timeout = Duration::from_millis(500);
    let _api = ApiServer::bind(&path)
        .unwrap()
        .with_request_timeout(timeout)
        .serve(vm.clone())
        .unwrap();

    let mut staller = UnixStream::connect(&path).unwrap();
    staller.write_all(b"GET /vm HTTP/1.1\r\nHost: lo").unwrap();
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let info = ApiClient::connect(&path).unwrap().get_info().unwrap();
    let waited = start.elapsed();
    assert_eq!(info, vm.info());
    assert!(waited < timeout * 4, "waited {waited:?}");

    // The staller got a 408.
    let mut answer = String::new();
    staller.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");

    // An idle connection is closed just the same.
    let mut idle = UnixStream::connect(&path).unwrap();
    let mut answer = String::new();
    idle.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
}

#[test]
fn garbage_gets_a_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let (vm, _api) = serve(&path);
    let mib: usize = 1 << 20;

    // Binary noise: not a request line.
    let noise: Vec<u8> = (0..mib)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let answer = raw(&path, &noise);
    assert_eq!(status_of(&answer), 400, "{answer}");
    error_of(&answer);
    // One endless token: headers that never end.
    let answer = raw(&path, &vec![b'A'; mib]);
    assert_eq!(status_of(&answer), 431, "{answer}");
    // A request line, then a header that never ends.
    let mut long = b"GET /vm HTTP/1.1\r\nX-Long: ".to_vec();
    long.resize(mib, b'x');
    assert_eq!(status_of(&raw(&path, &long)), 431);
    // A body announced larger than the limit is refused before it is sent.
    let answer = raw(
        &path,
        b"PUT /vm/pause HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 413, "{answer}");
    // And sent anyway.
    let mut big = b"PUT /vm/pause HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    big.resize(big.len() + mib, b'{');
    assert_eq!(status_of(&raw(&path, &big)), 413);
    // Half a request, then the client closes its side.
    let mut half = UnixStream::connect(&path).unwrap();
    half.write_all(b"PUT /vm/pau").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    half.read_to_string(&mut answer).unwrap();
    assert_eq!(status_of(&answer), 400, "{answer}");
    // A connection closed without a word.
    drop(UnixStream::connect(&path).unwrap());

    assert!(vm.calls().is_empty());
    let mut client = ApiClient::connect(&path).unwrap();
    client.put(Action::Pause).unwrap();
    assert_eq!(client.get_info().unwrap().state, VmState::Paused);
}

#[test]
fn pipelined_requests_get_one_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let (vm, _api) = serve(&path);
    let answer = raw(
        &path,
        b"PUT /vm/pause HTTP/1.1\r\n\r\nPUT /vm/resume HTTP/1.1\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 204);
    assert!(answer.contains("Connection: close\r\n"));
    assert_eq!(vm.calls(), [Action::Pause]);
}

#[test]
fn shutdown_is_prompt_even_with_a_client_connected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.sock");
    let (_vm, api) = serve(&path);
    let handle = api.shutdown_handle();
    let mut idle = UnixStream::connect(&path).unwrap();
    idle.write_all(b"GET").unwrap();
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    handle.shutdown();
    drop(api);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(!path.exists());
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an answer after shutdown: {rest:?}");
    match ApiClient::connect(&path) {
        Err(e) => assert!(e.is_no_such_vm(), "{e}"),
        Ok(_) => panic!("still answering"),
    }
}

#[test]
fn list_vms_finds_live_sockets_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let sock = |name: &str| -> PathBuf { dir.path().join(name) };
    let (_a, _api_a) = serve(&sock("beta.sock"));
    let (_b, _api_b) = serve(&sock("alpha.sock"));
    drop(UnixListener::bind(sock("stale.sock")).unwrap());
    fs::write(sock("file.sock"), "").unwrap();
    let _not_sock_named = UnixListener::bind(sock("other")).unwrap();

    let vms = list_vms(dir.path()).unwrap();
    let names: Vec<_> = vms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    for (_, info) in &vms {
        assert_eq!(info.as_ref().unwrap().name, "fake");
    }
    assert!(list_vms(&dir.path().join("missing")).unwrap().is_empty());
}

#[test]
fn client_errors_tell_a_missing_vm_from_others() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ApiClient::connect(dir.path().join("nope.sock")).unwrap_err();
    assert!(missing.is_no_such_vm());
    assert!(missing.to_string().starts_with("no VM at "), "{missing}");

    // A server that answers nonsense is a protocol error, not a missing VM.
    let path = dir.path().join("odd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let odd = thread::spawn(move || {
        // `connect` checks with a connection of its own, then `get_info` makes another.
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            if s.read(&mut buf).unwrap() > 0 {
                s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap();
            }
        }
    });
    let err = ApiClient::connect(&path).unwrap().get_info().unwrap_err();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    odd.join().unwrap();
}
