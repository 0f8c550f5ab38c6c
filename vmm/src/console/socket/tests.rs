//! The console socket over real sockets in a temporary directory, driven by a real event
//! loop and a real UART, as one boot of a VM would drive it.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use ghost_devices::BusDevice;

use super::*;

type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

const MIB: usize = 1 << 20;
/// How long anything expected may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// UART registers (offsets from COM1).
const RBR: u64 = 0;
const LSR: u64 = 5;

/// Byte `i` of a stream that does not repeat within 251 bytes and holds no `[`.
fn stream(from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) + 1)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Fixture {
    dir: tempfile::TempDir,
    console: Option<SocketConsole>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_log(None)
    }

    fn with_log(log: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = log.map(|name| dir.path().join(name));
        let console =
            SocketConsole::open("test", &dir.path().join("vm.console"), log.as_deref()).unwrap();
        Self {
            dir,
            console: Some(console),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("vm.console")
    }

    fn console(&self) -> &SocketConsole {
        self.console.as_ref().unwrap()
    }

    /// A boot: a UART whose output is the console's, and an event loop with the console's
    /// subscriber.
    fn boot(&self) -> Boot {
        let input_ready = EventFd::new(EFD_NONBLOCK).unwrap();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            EventFd::new(EFD_NONBLOCK).unwrap(),
            input_ready.try_clone().unwrap(),
            self.console().output(),
        )));
        let mut events = Manager::new().unwrap();
        events.add_subscriber(Arc::new(Mutex::new(
            self.console().events(serial.clone(), input_ready),
        )));
        Boot { serial, events }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.path()).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    fn attached(&self) -> bool {
        lock(&self.console().state).client.is_some()
    }
}

struct Boot {
    serial: Arc<Mutex<SerialDevice>>,
    events: Manager,
}

impl Boot {
    fn pump(&mut self) {
        self.events.run_with_timeout(5).unwrap();
    }

    /// Runs the loop until `done`, failing after [`PATIENCE`].
    fn pump_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.pump();
        }
    }

    /// What the guest writes to the UART's transmit register, byte by byte.
    fn guest_prints(&self, bytes: &[u8]) {
        let mut uart = self.serial.lock().unwrap();
        for b in bytes {
            uart.write(0, RBR, &[*b]);
        }
    }

    /// Bytes the guest finds in the UART's receive FIFO now.
    fn guest_reads(&self) -> Vec<u8> {
        let mut uart = self.serial.lock().unwrap();
        let mut got = Vec::new();
        let mut b = [0u8];
        loop {
            uart.read(0, LSR, &mut b);
            if b[0] & 1 == 0 {
                return got;
            }
            uart.read(0, RBR, &mut b);
            got.push(b[0]);
        }
    }

    /// Reads `client` (running the loop meanwhile) until what arrived satisfies `done` or
    /// the client sees EOF; returns what arrived and whether it was EOF.
    fn read_until(
        &mut self,
        client: &mut UnixStream,
        done: impl Fn(&[u8]) -> bool,
    ) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if done(&got) {
                return (got, false);
            }
            assert!(
                Instant::now() < deadline,
                "timed out; got {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[got.len().saturating_sub(200)..])
            );
            self.pump();
            loop {
                match client.read(&mut buf) {
                    Ok(0) => return (got, true),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }

    fn read_exactly(&mut self, client: &mut UnixStream, expected: &[u8]) {
        let (got, _) = self.read_until(client, |g| g.len() >= expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }
}

#[test]
fn a_client_gets_the_scrollback_then_live_output() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    boot.guest_prints(b"early boot line\r\n");
    let mut client = fx.connect();
    boot.read_exactly(&mut client, b"early boot line\r\n");
    boot.guest_prints(b"live\r\n");
    boot.read_exactly(&mut client, b"live\r\n");
}

#[test]
fn a_client_that_never_reads_never_blocks_the_writer() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    let mut client = fx.connect();
    boot.pump_until("the client to attach", || fx.attached());

    // 10 MiB in UART-sized and larger writes, with the loop not running at all: nothing
    // drains the client's socket.
    let all = stream(0, 10 * MIB);
    let mut out = fx.console().output();
    let started = Instant::now();
    for (i, chunk) in all.chunks(4096).enumerate() {
        if i % 64 == 0 {
            // Some byte-at-a-time writes too, as the UART makes them.
            for b in chunk {
                out.write_all(&[*b]).unwrap();
            }
        } else {
            out.write_all(chunk).unwrap();
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "10 MiB took {took:?}");
    {
        let state = lock(&fx.console().state);
        assert_eq!(state.ring.len(), RING_SIZE);
        let (older, newer) = state.ring.contents();
        assert_eq!([older, newer].concat(), &all[all.len() - RING_SIZE..]);
        let client = state.client.as_ref().unwrap();
        assert!(!client.gone);
        assert!(client.backlog.len() <= BACKLOG_LIMIT);
        assert!(client.backlog.skipped > 0);
    }
    // One large write as well: the ring keeps its tail.
    let big = stream(17, 3 * MIB);
    out.write_all(&big).unwrap();
    {
        let state = lock(&fx.console().state);
        let (older, newer) = state.ring.contents();
        assert_eq!([older, newer].concat(), &big[big.len() - RING_SIZE..]);
    }

    // When the client reads at last: what the socket held, one skip notice, then the
    // newest output, ending with the last byte written.
    let (got, eof) = boot.read_until(&mut client, |g| g.ends_with(&big[big.len() - 4096..]));
    assert!(!eof);
    assert!(
        contains(&got, b"bytes of console output skipped"),
        "no notice"
    );
    // (A byte-sized send costs a whole socket buffer, so a few hundred fit before the
    // socket is full.)
    assert!(got.starts_with(&all[..100]), "the first output is lost");
    assert!(got.len() < 4 * MIB, "got {} bytes", got.len());
}

#[test]
fn a_new_client_takes_over_and_the_old_one_is_closed() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    let mut first = fx.connect();
    boot.guest_prints(b"one\r\n");
    boot.read_exactly(&mut first, b"one\r\n");

    let mut second = fx.connect();
    boot.read_exactly(&mut second, b"one\r\n");
    let (got, eof) = boot.read_until(&mut first, |_| false);
    assert!(eof, "the first client is still open");
    assert_eq!(got, TAKEOVER_NOTICE);

    boot.guest_prints(b"two\r\n");
    boot.read_exactly(&mut second, b"two\r\n");
    // Input now comes from the second client.
    second.write_all(b"s").unwrap();
    let serial = boot.serial.clone();
    boot.pump_until("input", || has_input(&serial));
    assert_eq!(boot.guest_reads(), b"s");
}

fn has_input(serial: &Arc<Mutex<SerialDevice>>) -> bool {
    serial.lock().unwrap().input_capacity() < 64
}

#[test]
fn input_reaches_the_uart_no_faster_than_its_fifo_takes_it() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    let mut client = fx.connect();
    boot.pump_until("the client to attach", || fx.attached());
    let typed = stream(0, 1000);
    client.write_all(&typed).unwrap();

    let mut received = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while received.len() < typed.len() {
        assert!(Instant::now() < deadline, "got {} bytes", received.len());
        boot.pump();
        let capacity = boot.serial.lock().unwrap().input_capacity();
        let now = boot.guest_reads();
        // The FIFO was never overrun: what the guest finds fits in it.
        assert!(
            now.len() + capacity <= 64,
            "{} bytes in the FIFO",
            now.len()
        );
        received.extend_from_slice(&now);
    }
    assert_eq!(received, typed);
}

#[test]
fn a_client_leaving_does_not_affect_the_vm() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    let client = fx.connect();
    boot.pump_until("the client to attach", || fx.attached());
    drop(client);
    // The guest goes on writing; the failed send marks the client gone, the loop closes it.
    boot.guest_prints(b"after\r\n");
    boot.pump_until("the client to be closed", || !fx.attached());
    boot.guest_prints(b"more\r\n");

    // One that leaves with a backlog and input unread.
    let mut slow = fx.connect();
    slow.write_all(b"typed").unwrap();
    boot.pump_until("the client to attach", || fx.attached());
    fx.console()
        .output()
        .write_all(&stream(0, 3 * MIB))
        .unwrap();
    drop(slow);
    boot.pump_until("the client to be closed", || !fx.attached());

    let mut next = fx.connect();
    let (got, _) = boot.read_until(&mut next, |g| g.len() >= RING_SIZE);
    assert_eq!(got.len(), RING_SIZE);
    boot.guest_prints(b"still here\r\n");
    boot.read_exactly(&mut next, b"still here\r\n");
}

#[test]
fn a_client_that_shuts_down_its_input_still_gets_output() {
    let fx = Fixture::new();
    let mut boot = fx.boot();
    let mut client = fx.connect();
    boot.pump_until("the client to attach", || fx.attached());
    client.write_all(b"ab").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    boot.pump_until("input EOF", || {
        lock(&fx.console().state)
            .client
            .as_ref()
            .is_some_and(|c| c.input_closed)
    });
    assert_eq!(boot.guest_reads(), b"ab");
    boot.guest_prints(b"output\r\n");
    boot.read_exactly(&mut client, b"output\r\n");
}

#[test]
fn the_client_and_scrollback_survive_a_reboot() {
    let fx = Fixture::new();
    let mut client = fx.connect();
    {
        let mut first = fx.boot();
        first.guest_prints(b"first boot\r\n");
        first.read_exactly(&mut client, b"first boot\r\n");
    }
    // The VM is rebuilt: a new UART, a new event loop.
    let mut second = fx.boot();
    second.guest_prints(b"second boot\r\n");
    second.read_exactly(&mut client, b"second boot\r\n");
    client.write_all(b"k").unwrap();
    let serial = second.serial.clone();
    second.pump_until("input to reach the new UART", || has_input(&serial));
    assert_eq!(second.guest_reads(), b"k");
    // A later client gets both boots.
    let mut later = fx.connect();
    second.read_exactly(&mut later, b"first boot\r\nsecond boot\r\n");
}

#[test]
fn the_log_file_gets_everything_appended() {
    let dir_fx = Fixture::with_log(Some("console.log"));
    let log = dir_fx.dir.path().join("console.log");
    let boot = dir_fx.boot();
    boot.guest_prints(b"logged\r\n");
    drop(boot);
    drop(dir_fx.console);
    assert_eq!(std::fs::read(&log).unwrap(), b"logged\r\n");

    // Appended to, not truncated, by the next run.
    let console =
        SocketConsole::open("test", &dir_fx.dir.path().join("vm.console"), Some(&log)).unwrap();
    console.output().write_all(b"again\r\n").unwrap();
    assert_eq!(std::fs::read(&log).unwrap(), b"logged\r\nagain\r\n");
}

#[test]
fn the_socket_is_private_and_removed_when_the_run_ends() {
    let mut fx = Fixture::new();
    let mode = std::fs::metadata(fx.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let mut boot = fx.boot();
    let mut client = fx.connect();
    boot.guest_prints(b"bye\r\n");
    boot.read_exactly(&mut client, b"bye\r\n");
    drop(fx.console.take());
    assert!(!fx.path().exists());
    let (got, eof) = boot.read_until(&mut client, |_| false);
    assert!(eof);
    assert_eq!(got, STOPPED_NOTICE);
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/vm.console");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // A socket nobody listens on any more: what a killed VMM leaves.
    drop(UnixListener::bind(&path).unwrap());
    assert!(UnixStream::connect(&path).is_err());
    let console = SocketConsole::open("test", &path, None).unwrap();
    UnixStream::connect(&path).unwrap();
    drop(console);
    assert!(!path.exists());

    std::fs::write(&path, b"not a socket").unwrap();
    let e = SocketConsole::open("test", &path, None).unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

    // A missing folder is created.
    let deep = dir.path().join("a/b/vm.console");
    drop(SocketConsole::open("test", &deep, None).unwrap());
    let mode = std::fs::metadata(dir.path().join("a/b"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn the_backlog_skips_ahead_with_a_notice() {
    let mut backlog = Backlog::new(10);
    backlog.push(b"0123456789");
    backlog.push(b"abc");
    assert_eq!(backlog.skipped, 3);
    backlog.push(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    assert_eq!(backlog.skipped, 3 + 10 + 16);
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    assert!(backlog.send(&ours).unwrap());
    assert!(backlog.is_empty());
    ours.flush().unwrap();
    drop(ours);
    let mut got = String::new();
    (&theirs).read_to_string(&mut got).unwrap();
    assert_eq!(
        got,
        "\r\n[ghost-vmm: 29 bytes of console output skipped: this console reads too slowly]\r\nQRSTUVWXYZ"
    );
}
