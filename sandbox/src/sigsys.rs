//! The `SIGSYS` handler: a filter's `SECCOMP_RET_TRAP` lands here. It writes one line naming
//! the thread and the system call, then makes the kill-switch call, which the kernel answers
//! with `SECCOMP_RET_KILL_PROCESS` (see [`crate::seccomp::KILL_SWITCH`]).
//!
//! Only async-signal-safe work happens here: no allocation, no locks, one `write(2)`. The
//! thread's name and kind were stored in const-initialised thread-locals (no lazy
//! initialisation, no destructor) when it confined itself.

use std::cell::Cell;

use crate::{SandboxError, CONFINED};

thread_local! {
    /// The calling thread's name (`comm`, NUL-padded) when it confined itself.
    static NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// `si_code` of a `SIGSYS` sent by seccomp.
const SYS_SECCOMP: i32 = 1;

/// The `SIGSYS` member of `siginfo_t` on x86_64 (`_sigfault`'s place in the union, which
/// starts at offset 16).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// Stores the calling thread's name for the handler.
pub(crate) fn remember_thread_name() {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into `name`, which is 16.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    if rc != 0 {
        name = [0; 16];
    }
    NAME.with(|n| n.set(name));
}

/// Installs the handler for the whole process.
pub(crate) fn install_handler() -> Result<(), SandboxError> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value; the fields we
    // need are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa_mask` is a sigset_t owned by `action`.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised; the handler is async-signal-safe (see module
    // docs); the old action is not wanted.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SandboxError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

extern "C" fn handler(_signo: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (code, nr) = if info.is_null() {
        (0, -1)
    } else {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; SigsysInfo is
        // its SIGSYS layout on x86_64 and no larger than siginfo_t (128 bytes).
        let sys = unsafe { &*(info as *const SigsysInfo) };
        (sys.code, sys.syscall)
    };
    let mut line = Line::new();
    line.push(b"ghost-vmm: sandbox: ");
    if code == SYS_SECCOMP {
        line.push(b"the ");
        let mut name = NAME.with(Cell::get);
        match CONFINED.with(Cell::get) {
            Some(kind) => line.push(kind.name().as_bytes()),
            None => {
                // Not confined itself yet: under its creator's filters, which (the VMM
                // thread's) let it read its name.
                line.push(b"not yet confined");
                // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`, which is 16.
                if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } != 0 {
                    name = [0; 16];
                }
            }
        }
        line.push(b" thread '");
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        line.push(&name[..len]);
        line.push(b"' made system call ");
        match usize::try_from(nr).ok().and_then(syscalls::Sysno::new) {
            Some(sysno) => line.push(sysno.name().as_bytes()),
            None => line.push(b"?"),
        }
        line.push(b" (");
        line.push_number(i64::from(nr));
        line.push(b")");
        if !ctx.is_null() {
            // The first three arguments (an ioctl's request, a socket's family and type, a
            // prctl's option), from the registers the trapped call was made with.
            // SAFETY: for SA_SIGINFO handlers the kernel passes a valid ucontext_t.
            let regs = unsafe { &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs };
            line.push(b" with arguments ");
            for (i, reg) in [libc::REG_RDI, libc::REG_RSI, libc::REG_RDX]
                .iter()
                .enumerate()
            {
                if i > 0 {
                    line.push(b", ");
                }
                let value = usize::try_from(*reg)
                    .ok()
                    .and_then(|r| regs.get(r))
                    .copied();
                line.push_hex(value.map_or(0, |v| v as u64));
            }
        }
        line.push(b", which its seccomp filter does not allow; the process is killed\n");
    } else {
        line.push(b"SIGSYS from outside the sandbox; the process is killed\n");
    }
    let bytes = line.bytes();
    // SAFETY: write(2) is async-signal-safe; `bytes` is valid for its length.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
    crate::seccomp::pull_kill_switch();
}

/// A fixed buffer the handler formats its line into (no allocation in a signal handler).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut u = n.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + u8::try_from(u % 10).unwrap_or(0);
            u /= 10;
            if u == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, mut n: u64) {
        self.push(b"0x");
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[usize::try_from(n & 0xf).unwrap_or(0)];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_formats_numbers_and_truncates() {
        let mut l = Line::new();
        l.push(b"n=");
        l.push_number(0);
        l.push(b" ");
        l.push_number(-425);
        l.push(b" ");
        l.push_number(i64::MIN);
        assert_eq!(l.bytes(), b"n=0 -425 -9223372036854775808");
        let mut h = Line::new();
        h.push_hex(0);
        h.push(b" ");
        h.push_hex(0xae80);
        h.push(b" ");
        h.push_hex(u64::MAX);
        assert_eq!(h.bytes(), b"0x0 0xae80 0xffffffffffffffff");
        for _ in 0..100 {
            l.push(b"abcdef");
        }
        assert_eq!(l.bytes().len(), 256);
    }

    #[test]
    fn sigsys_layout_fits_siginfo() {
        assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());
        assert_eq!(std::mem::offset_of!(SigsysInfo, syscall), 24);
    }
}
