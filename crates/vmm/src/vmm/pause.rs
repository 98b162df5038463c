//! Pausing the VM: every vCPU thread is kicked out of `KVM_RUN` and parks (see
//! `Vcpu::park`), then serves save-state requests until it is resumed. Devices keep running on
//! the event loop meanwhile.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::Killable;

use super::{Vmm, VmmError, NMI_KICK_AFTER, STOP_TIMEOUT};
use crate::vstate::vcpu::{kick_signal, VcpuReply, VcpuRequest};
use crate::vstate::vcpu_state::VcpuState;

impl Vmm {
    /// Stops every vCPU before its next `KVM_RUN` and waits until all are parked. Devices keep
    /// running on the event loop (their backends may still complete requests into guest memory).
    pub fn pause(&mut self) -> Result<(), VmmError> {
        if self.paused {
            return Ok(());
        }
        self.pause.store(true, Ordering::Release);
        self.wait_parked()
    }

    /// Lets every parked vCPU run the guest again.
    pub fn resume(&mut self) -> Result<(), VmmError> {
        if !self.paused {
            return Ok(());
        }
        self.pause.store(false, Ordering::Release);
        for (id, tx) in (0u8..).zip(&self.vcpu_requests) {
            tx.send(VcpuRequest::Resume).map_err(|_| VmmError::VcpuGone(id))?;
        }
        self.paused = false;
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The architectural state of every vCPU, by id (the VM must be paused).
    pub fn save_vcpu_states(&mut self) -> Result<Vec<VcpuState>, VmmError> {
        if !self.paused {
            return Err(VmmError::NotPaused);
        }
        for (id, tx) in (0u8..).zip(&self.vcpu_requests) {
            tx.send(VcpuRequest::SaveState).map_err(|_| VmmError::VcpuGone(id))?;
        }
        let n = self.vcpu_requests.len();
        let mut states: Vec<Option<VcpuState>> = (0..n).map(|_| None).collect();
        let mut got = 0;
        while got < n {
            let (id, reply) = self
                .vcpu_replies
                .recv_timeout(STOP_TIMEOUT)
                .map_err(|_| VmmError::PauseTimeout(u8::try_from(got).unwrap_or(u8::MAX)))?;
            if let VcpuReply::State(state) = reply {
                if let Some(slot) = states.get_mut(usize::from(id)) {
                    *slot = Some((*state)?);
                    got += 1;
                }
            }
        }
        Ok(states.into_iter().flatten().collect())
    }

    /// Kicks the vCPUs out of `KVM_RUN` until each has reported itself parked.
    pub(super) fn wait_parked(&mut self) -> Result<(), VmmError> {
        let n = self.threads.len();
        let mut parked = vec![false; n];
        let start = Instant::now();
        let mut last_nmi = start;
        while let Some(waiting) = parked.iter().position(|p| !p) {
            let waiting = u8::try_from(waiting).unwrap_or(u8::MAX);
            if start.elapsed() >= STOP_TIMEOUT {
                return Err(VmmError::PauseTimeout(waiting));
            }
            let nmi_now = last_nmi.elapsed() >= NMI_KICK_AFTER;
            for (id, t) in self.threads.iter().enumerate() {
                if parked[id] {
                    continue;
                }
                if t.is_finished() {
                    return Err(VmmError::VcpuGone(u8::try_from(id).unwrap_or(u8::MAX)));
                }
                let _ = t.kill(kick_signal());
                if nmi_now {
                    self.nmi(id);
                }
            }
            if nmi_now {
                last_nmi = Instant::now();
            }
            if let Ok((id, VcpuReply::Paused)) = self.vcpu_replies.recv_timeout(Duration::from_millis(20)) {
                if let Some(p) = parked.get_mut(usize::from(id)) {
                    *p = true;
                }
            }
        }
        self.paused = true;
        Ok(())
    }
}
