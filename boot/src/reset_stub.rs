//! The real-mode reset entry point, for guests that reboot "through the BIOS".
//!
//! On hardware-reduced ACPI, x86 Linux chooses the EFI reboot method, and without EFI runtime
//! services falls back to the BIOS method: it returns to real mode and jumps to F000:FFF0,
//! where a PC's firmware would reset the machine. ghost-vmm boots kernels directly and has no
//! firmware, so it places a few instructions there that do what firmware would: write the FADT
//! reset value to the ACPI power port. Every reboot method then ends in the VMM's reset path.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{ACPI_POWER_PORT, ACPI_RESET_VALUE, BIOS_RESET_ENTRY};

/// The 16-bit code at F000:FFF0: `mov al, RESET; mov dx, PORT; out dx, al; 1: hlt; jmp 1b`.
pub fn reset_stub_code() -> [u8; 9] {
    let [port_lo, port_hi] = ACPI_POWER_PORT.to_le_bytes();
    [
        0xb0,
        ACPI_RESET_VALUE, // mov al, imm8
        0xba,
        port_lo,
        port_hi, // mov dx, imm16
        0xee,    // out dx, al
        0xf4,    // hlt
        0xeb,
        0xfd, // jmp hlt
    ]
}

/// Writes the reset stub at [`BIOS_RESET_ENTRY`].
pub fn write_reset_stub<M: GuestMemoryBackend>(mem: &M) -> Result<(), GuestMemoryError> {
    mem.write_slice(&reset_stub_code(), GuestAddress(BIOS_RESET_ENTRY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{guest_memory, read_bytes};

    #[test]
    fn stub_writes_reset_value_to_power_port_in_real_mode() {
        let mem = guest_memory(64 << 20);
        write_reset_stub(&mem).unwrap();
        let code = read_bytes(&mem, BIOS_RESET_ENTRY, 9);
        assert_eq!(code, [0xb0, 0x01, 0xba, 0x00, 0x06, 0xee, 0xf4, 0xeb, 0xfd]);
        // The stub fits before 1 MiB (real-mode code cannot run past the segment's end).
        assert!(BIOS_RESET_ENTRY + code.len() as u64 <= 0x10_0000);
    }
}
