//! The outlet's physical MCF in the agent: the backup when the e-MCF is
//! down (the simulator stopped: its port refuses connections), and the
//! device-only policy. The device is the simulated MCF on a real
//! pseudo-terminal, driven through the serial-port link.

use std::sync::atomic::{AtomicBool, Ordering};

use bonopay_sync::dgi::agent::{DEVICE_UID_PREFIX, DevicePolicy};
use bonopay_sync::mcf::certifier::{DeviceCertifier, McfCertifier};
use bonopay_sync::mcf::serial::{DEFAULT_BAUD, SerialLink};
use bonopay_sync::mcf::sim::pty::Pty;
use bonopay_sync::mcf::sim::{FiscalMemory, host};

use super::*;

struct Device {
    certifier: Arc<dyn DeviceCertifier>,
    state: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn device(dir: &std::path::Path) -> Device {
    let config = bonopay_sync::mcf::sim::SimConfig {
        nim: "DEF0100001".into(),
        nif: "A1309334L".into(),
        secret: b"device secret".to_vec(),
        state_path: dir.join("mcf-memory.json"),
        faults: bonopay_sync::mcf::sim::Faults::default(),
    };
    let Pty {
        mut master,
        slave_path,
    } = Pty::open().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || host(&config, &mut master, &s, &mut |_| {}).unwrap());
    let path = slave_path.to_string_lossy().into_owned();
    let certifier = McfCertifier::new(
        Box::new(move || {
            Ok(Box::new(SerialLink::open(&path, DEFAULT_BAUD)?)
                as Box<dyn bonopay_sync::mcf::link::McfLink>)
        }),
        dir.join("mcf-journal.json"),
        bonopay_tax::RateTable::dgi_2025().invoiced_rates(),
    )
    .unwrap();
    Device {
        certifier: Arc::new(certifier),
        state: dir.join("mcf-memory.json"),
        stop,
        thread: Some(thread),
    }
}

/// A loopback address nothing listens on: the e-MCF is down.
fn stopped_emcf() -> Arc<dyn DgiTransport> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Arc::new(
        HttpDgiTransport::new(
            &format!("http://127.0.0.1:{port}"),
            "token",
            Duration::from_secs(2),
        )
        .unwrap(),
    )
}

#[test]
fn with_the_emcf_down_the_backup_device_certifies_at_once() {
    let r = rig();
    let dev = device(r.dir.path());
    r.seal(3);
    let agent = r.agent(stopped_emcf()).with_device(
        OUTLET,
        Arc::clone(&dev.certifier),
        DevicePolicy::Fallback,
    );
    // One pass, no clock moved: nothing waits for a backoff.
    agent.run_once().unwrap();
    assert_eq!(
        r.states().get(&ItemState::Synced),
        Some(&3),
        "{:?}",
        r.states()
    );
    for seq in 1..=3 {
        let c = r.fiscalizer.certification_of(OUTLET, seq).unwrap().unwrap();
        assert_eq!(c.source, CertificationSource::Mcf);
        assert_eq!(c.elements.nim, "DEF0100001");
        assert!(c.elements.qr_code.starts_with("RDCDEF01;DEF0100001;"));
        let item = r.outbox.get(OUTLET, seq).unwrap().unwrap();
        assert_eq!(
            item.uid.as_deref(),
            Some(&*format!("{DEVICE_UID_PREFIX}DEF0100001"))
        );
    }
    let memory = FiscalMemory::load(&dev.state, "DEF0100001").unwrap();
    assert_eq!(memory.tc, 3);
    // Nothing is left for the e-MCF when it comes back.
    agent.run_once().unwrap();
    assert_eq!(FiscalMemory::load(&dev.state, "DEF0100001").unwrap().tc, 3);
    // The ledger with its device certifications verifies.
    let check =
        bonopay_signer::SignatureCheck::new(vec![r.fiscalizer.signer().public_key().clone()]);
    let report = bonopay_ledger::verify_store(r.ledger.as_ref(), OUTLET, &check);
    assert!(report.is_valid(), "{report:?}");
}

#[test]
fn with_the_emcf_up_the_backup_device_is_not_used() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let dev = device(r.dir.path());
    r.seal(2);
    let agent = r.agent(Arc::new(http(&sim))).with_device(
        OUTLET,
        Arc::clone(&dev.certifier),
        DevicePolicy::Fallback,
    );
    r.drain(&agent);
    for seq in 1..=2 {
        let c = r.fiscalizer.certification_of(OUTLET, seq).unwrap().unwrap();
        assert_eq!(c.source, CertificationSource::Emcf);
    }
    assert_eq!(FiscalMemory::load(&dev.state, "DEF0100001").unwrap().tc, 0);
}

#[test]
fn a_device_only_outlet_never_calls_the_emcf() {
    let sim = start_sim(SimConfig::default());
    let r = rig();
    let dev = device(r.dir.path());
    r.seal(2);
    let agent = r.agent(Arc::new(http(&sim))).with_device(
        OUTLET,
        Arc::clone(&dev.certifier),
        DevicePolicy::Only,
    );
    agent.run_once().unwrap();
    assert_eq!(r.states().get(&ItemState::Synced), Some(&2));
    assert!(sim.sim.confirms().is_empty());
    assert_eq!(FiscalMemory::load(&dev.state, "DEF0100001").unwrap().tc, 2);
}
