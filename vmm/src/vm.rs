//! One VM's life: build it from a [`VmConfig`], run its vCPUs and device loop, tear it down.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use ghost_api::ApiServer;
use ghost_boot::layout;
use ghost_devices::boot_timer::{BootTimer, MilestoneSink};
use ghost_devices::i8042::{I8042Device, I8042_DATA_PORT, I8042_PORT_LEN};
use ghost_devices::serial::{SerialDevice, SerialOutput, SERIAL_PORT_LEN};
use ghost_devices::virtio::activation::Activator;
use ghost_devices::Bus;
use ghost_sandbox::ThreadKind;
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use crate::backends::Backends;
use crate::config::{OnReboot, SerialMode, VmConfig};
use crate::console::socket::SocketConsoleEvents;
use crate::console::{open_console_file, ConsoleInput, RawTerminal};
use crate::control::{ControlApi, ControlSocket};
use crate::interrupt::GsiRouting;
use crate::lifecycle::{BootHandles, Lifecycle, RunControl, VcpuKicker};
use crate::memory::{create_guest_memory, MemoryBacking};
use crate::passthrough::{HostBindings, KvmSlots, Passthrough};
use crate::pci::PciPlatform;
use crate::platform::{Board, BoardContext, Platform, PowerButton};
use crate::rtc::{CmosRtc, RtcTicker};
use crate::vcpu::{
    install_kick_handler, vcpu_kick_signal, ExitCounters, ExitStats, PowerToControl, Vcpu,
    VmControl, VmExit,
};
use crate::{boot, VmmError};

/// How to run a VM, beyond its file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Log each boot's exits by reason and the busiest ports and MMIO pages when it stops
    /// (at `warn` level, so they show without `GHOST_LOG`).
    pub exit_stats: bool,
    /// Run without the sandbox whatever the file says (`--no-sandbox`; debugging only).
    pub no_sandbox: bool,
    /// Run as this user after setup, whatever the file says (`--user`).
    pub user: Option<String>,
}

/// Runs the VM described by `config` until it powers off (or reboots with
/// `on_reboot = "exit"`), restarting it in place on guest reboot.
pub fn run(config: &VmConfig) -> Result<VmExit, VmmError> {
    run_with(config, &RunOptions::default())
}

/// [`run`] with [`RunOptions`].
pub fn run_with(config: &VmConfig, options: &RunOptions) -> Result<VmExit, VmmError> {
    let started = Instant::now();
    // Who the run becomes after root's part of setup: a bad user touches nothing.
    let identity = crate::sandbox::identity(config, options.user.as_deref())?;
    let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;
    // The control socket first: a second VM with this name fails here, before it touches
    // anything of the host (its pid is in the message). It is served once the VMM thread
    // is confined; clients wait in its queue until then.
    let api = ApiServer::bind(&config.vm.control_socket_path()).map_err(VmmError::ControlSocket)?;
    crate::sandbox::enable(config, options.no_sandbox)?;
    install_kick_handler().map_err(VmmError::Signals)?;
    // From here on, a stop signal presses the guest's power button instead of killing us.
    let run = RunControl::install().map_err(VmmError::Signals)?;
    let control = ControlSocket::new(api, Arc::new(ControlApi::new(config, run.clone())));
    let _terminal = match config.serial.mode {
        SerialMode::Stdio => RawTerminal::enter(libc::STDIN_FILENO),
        _ => None,
    };
    // Disks and TAPs live for the whole run, across guest reboots. The hugepage pool is
    // checked first so that a shortage touches nothing on the host.
    check_hugepage_pool(config)?;
    check_address_space(&kvm, config)?;
    let backends = Backends::open(config)?;
    // Direct kernel boot or firmware: the firmware's variable store is created and locked here.
    let platform = Platform::open(config)?;
    // The clock outlives guest reboots, like a PC's.
    let (below_4g, above_4g) = platform.ram_split(config.memory.size.bytes());
    let rtc = CmosRtc::new(below_4g, above_4g, config.vm.vcpus)?;
    // Passed-through devices: checked, and bound to vfio-pci where the file asks; given back
    // on every way out of this function (by the keeper once root is dropped).
    let mut bindings = HostBindings::prepare(config)?;
    // Root's part of setup is done: with `vm.user`, the run becomes that user here, before
    // the first boot, which runs as every later one will.
    let mut keeper =
        crate::sandbox::drop_privileges(config, identity.as_ref(), &mut bindings, &platform)?;
    let level = RunLevel {
        backends: &backends,
        run: &run,
        rtc: &rtc,
        platform: &platform,
        control: &control,
        booted: Cell::new(false),
    };
    let result = run_until_exit(&kvm, config, options, &level, started);
    // A run whose guest never booted (setup failed, or the firmware needs what ghost-vmm
    // lacks) leaves nothing behind.
    match (&mut keeper, level.booted.get()) {
        (Some(keeper), true) => keeper.booted(),
        (None, false) => platform.discard_created(),
        _ => {}
    }
    run.refuse_pending("the VM has stopped");
    // Whatever ended the run, what the guest wrote reaches the disks before we exit.
    backends.flush_disks();
    bindings.restore();
    // An API request that stopped the VM has had its answer written; the socket goes.
    control.shutdown();
    // Last, with everything of ours closed: the keeper gives back what root must.
    if let Some(keeper) = keeper {
        keeper.finish();
    }
    result
}

/// What lives for the whole run and each boot uses.
struct RunLevel<'a> {
    backends: &'a Backends,
    run: &'a Arc<RunControl>,
    rtc: &'a CmosRtc,
    platform: &'a Platform,
    control: &'a ControlSocket,
    /// Whether a boot ran to a guest exit the guest chose (set by [`run_until_exit`]).
    booted: Cell<bool>,
}

fn run_until_exit(
    kvm: &Kvm,
    config: &VmConfig,
    options: &RunOptions,
    level: &RunLevel<'_>,
    started: Instant,
) -> Result<VmExit, VmmError> {
    let run = level.run;
    // The first boot's milestones count from the VMM's start; a restart's from its own.
    let mut boot_start = started;
    loop {
        let vm = Vm::new(kvm, config, level, boot_start)?;
        // Setup is over: from here this thread runs the device loop and starts the vCPUs
        // and workers (the first boot confines it; later boots find it confined). The API
        // thread starts confined too.
        crate::sandbox::confine_vmm_thread(config, level.platform)?;
        level.control.serve()?;
        let (exit, stats) = vm.run(run, config.vm.stop_timeout.duration())?;
        if !matches!(exit, VmExit::Unsupported(_)) {
            level.booted.set(true);
        }
        if options.exit_stats {
            log::warn!("{}: {}", config.vm.name, stats.report(8));
        }
        boot_start = Instant::now();
        match exit {
            // A stop is under way: the guest chose to reset instead of powering off.
            VmExit::Reset if run.stopping() => {
                let why = "the guest reset instead of powering off after the power button";
                log::warn!("{}: stopping the VM hard: {why}", config.vm.name);
                return Ok(VmExit::Stopped(why.into()));
            }
            VmExit::Reset if run.take_restart() || config.vm.on_reboot == OnReboot::Restart => {
                log::info!("{}: guest reset; restarting", config.vm.name);
                continue;
            }
            exit => return Ok(exit),
        }
    }
}

/// A built, not yet running VM.
struct Vm {
    vm_fd: Arc<VmFd>,
    _memory: GuestMemoryMmap,
    _pci: PciPlatform,
    virtio: Activator,
    vcpus: Vec<Vcpu>,
    control: Arc<VmControl>,
    serial: Arc<Mutex<SerialDevice>>,
    serial_input_ready: EventFd,
    power_button: Arc<dyn PowerButton>,
    _keep: Vec<Box<dyn Send>>,
    rtc: RtcTicker,
    counters: Arc<ExitCounters>,
    console_input: bool,
    socket_console: Option<SocketConsoleEvents>,
    affinity: Option<Vec<usize>>,
    name: String,
}

impl Vm {
    fn new(
        kvm: &Kvm,
        config: &VmConfig,
        level: &RunLevel<'_>,
        boot_start: Instant,
    ) -> Result<Self, VmmError> {
        let platform = level.platform;
        // Guest RAM first: the kernel loads into it while KVM and the devices are set up.
        let memory = guest_memory(config, platform)?;
        let images = platform.start_loading(config, &memory)?;
        let vm_fd = Arc::new(kvm.create_vm().map_err(VmmError::kvm("KVM_CREATE_VM"))?);
        let (identity_map, tss) = platform.kvm_pages();
        vm_fd
            .set_tss_address(usize::try_from(tss).unwrap_or(usize::MAX))
            .map_err(VmmError::kvm("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .set_identity_map_address(identity_map)
            .map_err(VmmError::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(VmmError::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd
            .create_pit2(pit)
            .map_err(VmmError::kvm("KVM_CREATE_PIT2"))?;

        let ram_slots = register_memory(&vm_fd, &memory)?;
        let slots = Arc::new(KvmSlots::new(vm_fd.clone(), ram_slots));
        let vcpus_n = config.vm.vcpus;

        // Passed-through functions first: their BARs size the 64-bit window the ACPI
        // tables describe.
        let routing = GsiRouting::new(vm_fd.clone());
        let passthrough = Passthrough::open(&vm_fd, config, &memory, &routing, slots.clone())?;
        let supported_cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let high_bars = passthrough.high_bars();
        let mmio64 = layout::pci_mmio64_window(
            config.memory.size.bytes(),
            &high_bars,
            ghost_boot::cpuid::address_space(&supported_cpuid),
        )?;

        // Devices.
        let control = Arc::new(VmControl::new(
            EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?,
        ));
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let counters = Arc::new(ExitCounters::default());
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        vm_fd
            .register_irqfd(&serial_irq, layout::COM1_GSI)
            .map_err(VmmError::kvm("KVM_IRQFD"))?;
        let serial_input_ready = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        let out: SerialOutput = match (&config.serial.mode, &config.serial.path) {
            (SerialMode::Stdio, _) => Box::new(std::io::stdout()),
            (SerialMode::File, Some(path)) => {
                open_console_file(path).map_err(|e| VmmError::ConsoleFile(path.clone(), e))?
            }
            (SerialMode::Socket, _) => match level.backends.socket_console() {
                Some(console) => console.output(),
                None => Box::new(std::io::sink()),
            },
            _ => Box::new(std::io::sink()),
        };
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            serial_irq,
            serial_input_ready.try_clone().map_err(VmmError::EventFd)?,
            out,
        )));
        pio.insert(
            serial.clone(),
            u64::from(layout::COM1_PORT),
            SERIAL_PORT_LEN,
        )?;
        let socket_console = match level.backends.socket_console() {
            Some(console) => Some(console.events(
                serial.clone(),
                serial_input_ready.try_clone().map_err(VmmError::EventFd)?,
            )),
            None => None,
        };
        let power = PowerToControl(control.clone());
        // Both platforms: the PC reset line (0xFE to port 0x64), Linux's `reboot=k`.
        pio.insert(
            Arc::new(Mutex::new(I8042Device::new(power.clone()))),
            u64::from(I8042_DATA_PORT),
            I8042_PORT_LEN,
        )?;
        let rtc = level.rtc.plug(&vm_fd, &pio)?;

        pio.insert(
            Arc::new(Mutex::new(BootTimer::new(
                boot_start,
                MilestoneLog {
                    vm: config.vm.name.clone(),
                    counters: counters.clone(),
                },
            ))),
            u64::from(layout::BOOT_TIMER_PORT),
            1,
        )?;

        let mut pci = PciPlatform::new(
            vm_fd.clone(),
            memory.clone(),
            mmio64,
            routing,
            (&pio, &mmio),
            platform.pci_chipset(&power),
        )?;
        let mut disks = Vec::new();
        for (name, device) in level.backends.devices(config)? {
            let is_disk = name.starts_with("disk");
            let at = pci.add_virtio(name.clone(), device)?;
            log::info!("{}: {name} at PCI {at}", config.vm.name);
            if is_disk {
                disks.push(at);
            }
        }
        let passed = passthrough.plug(&vm_fd, &config.vm.name, &mut pci)?;
        let Board {
            power_button,
            entry,
            keep,
        } = platform.board(BoardContext {
            config,
            vm_fd: &vm_fd,
            memory: &memory,
            pio: &pio,
            mmio: &mmio,
            pci: &mut pci,
            power,
            slots: &slots,
            mmio64,
            high_bars: &high_bars,
            disks: &disks,
            passthrough: &passed,
            images,
        })?;

        let mut vcpus = Vec::with_capacity(usize::from(vcpus_n));
        let mut hyperv = None;
        for index in 0..vcpus_n {
            let fd = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(VmmError::kvm("KVM_CREATE_VCPU"))?;
            if config.vm.hyperv && hyperv.is_none() {
                let leaves = crate::hyperv::leaves(kvm, &fd)?;
                log::info!("Hyper-V enlightenments: {}", leaves.offered().join(" "));
                hyperv = Some(leaves);
            }
            boot::configure_vcpu(
                &fd,
                index,
                vcpus_n,
                &supported_cpuid,
                hyperv.as_ref(),
                entry,
            )?;
            vcpus.push(Vcpu::new(
                index,
                fd,
                pio.clone(),
                mmio.clone(),
                control.clone(),
                counters.clone(),
            ));
        }

        Ok(Self {
            vm_fd,
            _memory: memory,
            virtio: pci.virtio_activator(),
            _pci: pci,
            vcpus,
            control,
            serial,
            serial_input_ready,
            power_button,
            _keep: keep,
            rtc,
            counters,
            console_input: config.serial.mode == SerialMode::Stdio,
            socket_console,
            affinity: config.vm.cpu_affinity.clone(),
            name: config.vm.name.clone(),
        })
    }

    /// Runs until the guest or the VMM stops the VM; returns why, and the exits of all vCPUs.
    /// Stop signals and control requests reach it through `run`.
    fn run(
        self,
        run: &Arc<RunControl>,
        stop_timeout: Duration,
    ) -> Result<(VmExit, ExitStats), VmmError> {
        let mut events = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(VmmError::EventManager)?;
        events.add_subscriber(Arc::new(Mutex::new(ExitWatcher {
            control: self.control.clone(),
        })));
        events.add_subscriber(Arc::new(Mutex::new(self.virtio)));
        let kicker = Arc::new(VcpuKicker::new(vcpu_kick_signal()));
        let lifecycle = Lifecycle::new(
            run.clone(),
            BootHandles {
                control: self.control.clone(),
                power_button: self.power_button.clone(),
                vm_fd: self.vm_fd.clone(),
                kicker: kicker.clone(),
            },
            stop_timeout,
            self.name.clone(),
        )
        .map_err(VmmError::EventFd)?;
        events.add_subscriber(Arc::new(Mutex::new(lifecycle)));
        events.add_subscriber(Arc::new(Mutex::new(self.rtc)));
        if self.console_input {
            // SAFETY: dup returns a new fd that we own (or -1, checked below).
            let fd = unsafe { libc::dup(libc::STDIN_FILENO) };
            if fd >= 0 {
                // SAFETY: `fd` is a fresh duplicate owned by nobody else.
                let stdin = unsafe { File::from_raw_fd(fd) };
                events.add_subscriber(Arc::new(Mutex::new(ConsoleInput::new(
                    stdin,
                    self.serial.clone(),
                    self.serial_input_ready
                        .try_clone()
                        .map_err(VmmError::EventFd)?,
                ))));
            }
        }
        if let Some(console) = self.socket_console {
            events.add_subscriber(Arc::new(Mutex::new(console)));
        }

        let mut threads: Vec<JoinHandle<ExitStats>> = Vec::with_capacity(self.vcpus.len());
        for (i, vcpu) in self.vcpus.into_iter().enumerate() {
            let cpu = self.affinity.as_ref().and_then(|a| a.get(i).copied());
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu);
                    }
                    // Before the guest's first instruction on this vCPU.
                    if let Err(e) = ghost_sandbox::confine_thread(ThreadKind::Vcpu) {
                        vcpu.fail(format!("vCPU thread {i}: {e}"));
                        return ExitStats::default();
                    }
                    vcpu.run()
                });
            match spawned {
                Ok(t) => {
                    kicker.add(t.as_pthread_t());
                    threads.push(t);
                }
                Err(e) => {
                    self.control
                        .request_exit(VmExit::Fatal(format!("cannot start vCPU thread {i}: {e}")));
                    break;
                }
            }
        }

        run.boot_started(self.counters.clone());
        while !self.control.stopping() {
            if let Err(e) = events.run() {
                self.control
                    .request_exit(VmExit::Fatal(format!("device event loop failed: {e}")));
            }
        }
        let stats = stop_vcpus(threads, vcpu_kick_signal());
        log::debug!("{}: {}", self.name, stats.report(8));
        let exit = self.control.reason().unwrap_or(VmExit::Fatal(
            "the VM stopped without a reason (a bug in ghost-vmm)".into(),
        ));
        Ok((exit, stats))
    }
}

/// Logs the guest's boot-timer milestones with the exits the VM has taken so far.
struct MilestoneLog {
    vm: String,
    counters: Arc<ExitCounters>,
}

impl MilestoneSink for MilestoneLog {
    fn milestone(&self, value: u8, elapsed: Duration) {
        log::info!(
            "{}: guest milestone {value} at {:.1} ms (exits so far: pio {}, mmio {})",
            self.vm,
            elapsed.as_secs_f64() * 1e3,
            self.counters.pio(),
            self.counters.mmio()
        );
    }

    fn suppressed(&self) {
        log::info!("{}: further guest milestones are not logged", self.vm);
    }
}

/// Kicks every vCPU thread out of KVM_RUN until it has returned, then joins it, summing the
/// threads' exit statistics. A kick can land just before a thread enters KVM_RUN, so it is
/// repeated until the thread is gone.
fn stop_vcpus(threads: Vec<JoinHandle<ExitStats>>, signal: i32) -> ExitStats {
    let mut total = ExitStats::default();
    for t in threads {
        while !t.is_finished() {
            let _ = t.kill(signal);
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Ok(stats) = t.join() {
            total.merge(&stats);
        }
    }
    total
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::warn!(
                "cannot pin vCPU to host CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Wakes the event loop when the VM must stop (the guest powered off or reset, a vCPU
/// failed, or the lifecycle stopped it).
struct ExitWatcher {
    control: Arc<VmControl>,
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(self.control.exit_evt(), EventSet::IN));
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.control.exit_evt().read();
    }
}

/// Checks what `run` would need from the host before building anything: the hugepage pool,
/// and a kernel image that loads (into scratch memory that is never touched by a guest).
pub fn preflight(config: &VmConfig) -> Result<(), VmmError> {
    // A VM of this name (its control socket) must not be running already.
    drop(ApiServer::bind(&config.vm.control_socket_path()).map_err(VmmError::ControlSocket)?);
    check_hugepage_pool(config)?;
    crate::sandbox::check(config)?;
    // The guest's address space as this host's KVM gives it (skipped without /dev/kvm: a
    // file can be checked on another machine than the one that runs it).
    if let Ok(kvm) = Kvm::new() {
        check_address_space(&kvm, config)?;
    }
    // Disks: opened and locked as `run` would, then released. A disk another VM holds is
    // reported here. (TAPs are not created by a check.)
    drop(Backends::open_disks(config)?);
    // Passed-through devices: bound (or to be bound), groups whole, enough locked memory.
    if !config.vfio.is_empty() {
        let host = crate::host::Host::system();
        host.check_vfio(&config.vfio).map_err(VmmError::Host)?;
        host.check_memlock(config.memory.size.bytes())
            .map_err(VmmError::Host)?;
    }
    if config.boot.kernel.is_none() {
        // Firmware boot: [boot] was checked with the file; the firmware loads the rest.
        return Ok(());
    }
    let scratch = create_guest_memory(
        &ghost_boot::ram_regions(config.memory.size.bytes()),
        &MemoryBacking {
            hugepages: None,
            prefault: false,
        },
    )?;
    boot::load_kernel(&scratch, config).map(|_| ())
}

/// Fails when guest RAM does not fit the physical address space of the CPU KVM gives guests.
fn check_address_space(kvm: &Kvm, config: &VmConfig) -> Result<(), VmmError> {
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let space = ghost_boot::cpuid::address_space(&cpuid);
    layout::check_ram(config.memory.size.bytes(), space)?;
    Ok(())
}

/// Fails with the pool's numbers when `memory.hugepages` asks for more pages than are free.
fn check_hugepage_pool(config: &VmConfig) -> Result<(), VmmError> {
    if config.memory.hugepages {
        crate::host::check_hugepages(
            config.memory.size.bytes(),
            config.memory.hugepage_size.bytes(),
        )
        .map_err(VmmError::Host)?;
    }
    Ok(())
}

fn guest_memory(config: &VmConfig, platform: &Platform) -> Result<GuestMemoryMmap, VmmError> {
    check_hugepage_pool(config)?;
    let backing = MemoryBacking {
        hugepages: config
            .memory
            .hugepages
            .then_some(config.memory.hugepage_size),
        prefault: config.prefault_memory(),
    };
    Ok(create_guest_memory(
        &platform.ram_regions(config.memory.size.bytes()),
        &backing,
    )?)
}

/// Registers guest RAM with KVM, one slot per region; returns the number of slots used.
fn register_memory(vm_fd: &VmFd, memory: &GuestMemoryMmap) -> Result<u32, VmmError> {
    for (slot, region) in memory.iter().enumerate() {
        let host = memory
            .get_host_address(region.start_addr())
            .map_err(|_| VmmError::MemorySlot(region.start_addr().0))?;
        let r = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| VmmError::MemorySlot(region.start_addr().0))?,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping behind `host` lives in `memory`, which the `Vm` keeps alive for
        // as long as the VM fd that references it.
        unsafe { vm_fd.set_user_memory_region(r) }
            .map_err(VmmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    u32::try_from(memory.num_regions()).map_err(|_| VmmError::MemorySlot(0))
}
