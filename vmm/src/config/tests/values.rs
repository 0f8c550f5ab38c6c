//! Sizes, hugepage sizes, PCI and MAC addresses.

use crate::config::{ByteSize, HugepageSize, MacAddr, PciAddress};

const MIB: u64 = 1 << 20;

#[test]
fn sizes_with_suffixes() {
    let cases = [
        ("1024K", 1024 << 10),
        ("512M", 512 * MIB),
        ("16G", 16 << 30),
        ("2T", 2 << 40),
        ("512", 512 * MIB),
        ("4096B", 4096),
        ("1GiB", 1 << 30),
        ("1gb", 1 << 30),
        ("256 MiB", 256 * MIB),
        (" 8g ", 8 << 30),
    ];
    for (text, bytes) in cases {
        assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes, "{text}");
    }
}

#[test]
fn bad_sizes() {
    for text in ["", "12Q", "G", "-5M", "1.5G", "M512", "5 M B", "0x10M"] {
        let e = text.parse::<ByteSize>().unwrap_err().to_string();
        assert!(e.contains("is not a size"), "{text}: {e}");
        assert!(!e.contains('\n'));
    }
    let e = "1.5G".parse::<ByteSize>().unwrap_err().to_string();
    assert!(e.contains("1536M"), "{e}");
    assert_eq!(
        "12Q".parse::<ByteSize>().unwrap_err().to_string(),
        "\"12Q\" is not a size (use K, M, G or a plain number of MiB)"
    );
}

#[test]
fn size_overflow() {
    for text in ["99999999999T", "18446744073709551616", "17179869184G"] {
        let e = text.parse::<ByteSize>().unwrap_err().to_string();
        assert!(e.contains("too large"), "{text}: {e}");
    }
    assert!(ByteSize::from_mib(u64::MAX).is_none());
}

#[test]
fn size_display_uses_largest_exact_unit() {
    let cases = [
        (16 << 30, "16G"),
        (1536 * MIB, "1536M"),
        (4096, "4K"),
        (100, "100B"),
        (0, "0"),
        (1 << 40, "1T"),
    ];
    for (bytes, text) in cases {
        assert_eq!(ByteSize::from_bytes(bytes).to_string(), text);
        assert_eq!(
            text.parse::<ByteSize>().unwrap().bytes(),
            bytes,
            "round trip {text}"
        );
    }
}

#[test]
fn hugepage_sizes() {
    assert_eq!("2M".parse::<HugepageSize>().unwrap(), HugepageSize::Size2M);
    assert_eq!(
        "2048K".parse::<HugepageSize>().unwrap(),
        HugepageSize::Size2M
    );
    assert_eq!("1G".parse::<HugepageSize>().unwrap(), HugepageSize::Size1G);
    assert_eq!(HugepageSize::Size1G.bytes(), 1 << 30);
    assert_eq!(HugepageSize::default(), HugepageSize::Size2M);
    let e = "4M".parse::<HugepageSize>().unwrap_err().to_string();
    assert_eq!(e, "\"4M\" is not a hugepage size (use \"2M\" or \"1G\")");
}

#[test]
fn pci_addresses() {
    let full: PciAddress = "0000:01:00.0".parse().unwrap();
    let short: PciAddress = "01:00.0".parse().unwrap();
    assert_eq!(full, short);
    assert_eq!(full.to_string(), "0000:01:00.0");
    let other: PciAddress = "0001:AF:1f.7".parse().unwrap();
    assert_eq!(
        (
            other.segment(),
            other.bus(),
            other.device(),
            other.function()
        ),
        (1, 0xaf, 0x1f, 7)
    );
    assert_eq!(other.to_string(), "0001:af:1f.7");
    for bad in [
        "",
        "01:00",
        "1:2:3:4.0",
        "01:20.0",
        "01:00.8",
        "0000:100:00.0",
        "zz:00.0",
        "01:00.+1",
        "00000:01:00.0",
    ] {
        let e = bad.parse::<PciAddress>().unwrap_err().to_string();
        assert!(e.contains("is not a PCI address"), "{bad}: {e}");
    }
    assert!(PciAddress::new(0, 0, 32, 0).is_none());
    assert!(PciAddress::new(0, 0, 31, 8).is_none());
}

#[test]
fn mac_addresses() {
    let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
    assert_eq!(mac.bytes(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert_eq!(mac.to_string(), "52:54:00:12:34:56");
    assert_eq!(
        "52-54-00-AB-cd-EF".parse::<MacAddr>().unwrap().to_string(),
        "52:54:00:ab:cd:ef"
    );
    assert!("01:00:5e:00:00:01"
        .parse::<MacAddr>()
        .unwrap()
        .is_multicast());
    for bad in [
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "52:54:00:12:34:zz",
        "525400123456",
    ] {
        let e = bad.parse::<MacAddr>().unwrap_err().to_string();
        assert!(e.contains("is not a MAC address"), "{bad}: {e}");
    }
}

#[test]
fn derived_macs_are_stable_unicast_and_distinct() {
    let a = MacAddr::derived("workstation", 0);
    assert_eq!(a, MacAddr::derived("workstation", 0));
    assert_ne!(a, MacAddr::derived("workstation", 1));
    assert_ne!(a, MacAddr::derived("server", 0));
    assert_eq!(a.bytes()[..3], [0x52, 0x54, 0x00]);
    assert!(!a.is_multicast());
    // Pinned: a MAC must not change between builds (DHCP leases, udev rules).
    assert_eq!(
        a.to_string(),
        MacAddr::derived("workstation", 0).to_string()
    );
}
