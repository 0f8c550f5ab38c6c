//! The VM's CMOS RTC: one `ghost_devices::rtc::Rtc` for the whole run (a guest reboot, like a
//! PC's reset, keeps the clock and NVRAM, including a time the guest set), placed on each
//! boot's port bus with its IRQ 8 irqfd, and driven by a timerfd in the boot's event loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use ghost_boot::layout;
use ghost_devices::rtc::{nvram, Rtc, SystemClock, RTC_PORT_LEN};
use ghost_devices::Bus;
use kvm_ioctls::VmFd;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::VmmError;

// The FADT tells the guest where the century is; the device keeps it there.
const _: () = assert!(layout::CMOS_CENTURY_INDEX == nvram::CMOS_CENTURY);

/// The run's RTC and the eventfds it signals through.
#[derive(Debug)]
pub(crate) struct CmosRtc {
    rtc: Arc<Mutex<Rtc>>,
    /// IRQ 8: registered as an irqfd with each boot's VM.
    irq: EventFd,
    /// Written (on a vCPU) when a guest access needs `tick` sooner than armed.
    wake: EventFd,
}

impl CmosRtc {
    /// An RTC at the host's UTC time, with the memory-size and CPU-count bytes firmware reads
    /// (harmless to a directly booted kernel).
    pub(crate) fn new(below_4g: u64, above_4g: u64, vcpus: u8) -> Result<Self, VmmError> {
        let irq = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        let mut rtc = Rtc::new(
            SystemClock,
            irq.try_clone().map_err(VmmError::EventFd)?,
            Box::new(wake.try_clone().map_err(VmmError::EventFd)?),
        );
        let mut bytes = nvram::memory_size_bytes(below_4g, above_4g).to_vec();
        bytes.push(nvram::cpu_count_byte(u32::from(vcpus)));
        // Every index the helpers return is NVRAM; an error here is a bug in them.
        if let Err(e) = rtc.set_nvram_bytes(&bytes) {
            log::warn!("cannot set the CMOS memory-size bytes: {e}");
        }
        Ok(Self {
            rtc: Arc::new(Mutex::new(rtc)),
            irq,
            wake,
        })
    }

    /// Puts the RTC on `pio` at 0x70 and wires IRQ 8 to `vm_fd`; returns the subscriber that
    /// runs its timer in the boot's event loop.
    pub(crate) fn plug(&self, vm_fd: &VmFd, pio: &Bus) -> Result<RtcTicker, VmmError> {
        vm_fd
            .register_irqfd(&self.irq, layout::RTC_GSI)
            .map_err(VmmError::kvm("KVM_IRQFD"))?;
        pio.insert(self.rtc.clone(), u64::from(layout::CMOS_PORT), RTC_PORT_LEN)?;
        Ok(RtcTicker {
            rtc: self.rtc.clone(),
            wake: self.wake.try_clone().map_err(VmmError::EventFd)?,
            timer: TimerFd::new().map_err(|e| VmmError::EventFd(e.into()))?,
        })
    }
}

/// Calls [`Rtc::tick`] when its deadline comes (a timerfd) or a guest access asks for it
/// sooner (the wake eventfd), and re-arms the timer with the next deadline.
#[derive(Debug)]
pub(crate) struct RtcTicker {
    rtc: Arc<Mutex<Rtc>>,
    wake: EventFd,
    timer: TimerFd,
}

impl RtcTicker {
    fn tick(&mut self) {
        let next = self.rtc.lock().unwrap_or_else(|e| e.into_inner()).tick();
        // A zero timeout would disarm the timer: a deadline already past fires in 1 µs.
        let after = next.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1))
        });
        if let Err(e) = self.timer.reset(after, None) {
            log::warn!("RTC timer: {e}");
        }
    }
}

impl MutEventSubscriber for RtcTicker {
    fn init(&mut self, ops: &mut EventOps) {
        for watched in [
            ops.add(Events::new(&self.wake, EventSet::IN)),
            ops.add(Events::new(&self.timer, EventSet::IN)),
        ] {
            if let Err(e) = watched {
                log::error!("cannot watch the RTC's timer: {e:?}");
            }
        }
        // A rebooted guest finds the RTC as the last boot left it, interrupts included.
        self.tick();
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == std::os::fd::AsRawFd::as_raw_fd(&self.wake) {
            let _ = self.wake.read();
        } else {
            let _ = self.timer.wait();
        }
        self.tick();
    }
}
