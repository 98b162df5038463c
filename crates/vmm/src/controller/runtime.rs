//! After boot: API requests against the running VM (pause/resume, snapshots, balloon, reads).

use std::path::Path;

use api::models::actions::ActionType;
use api::models::instance::{InstanceState, Version};
use api::models::vm::VmState as ApiVmState;
use api::models::vm_config::FullVmConfig;
use api::{ApiFault, ApiReply, ApiRequest, Backend};

use crate::metrics::{exit_stats, Metrics};
use crate::persist;
use crate::vmm::{VmExit, Vmm};

use super::*;

/// After boot: answers requests against the running VM.
pub struct Runtime<'a> {
    pub meta: &'a InstanceMeta,
    pub config: &'a mut FullVmConfig,
    pub vmm: &'a mut Vmm,
    pub metrics: &'a Metrics,
    /// Set to end the VM after the reply.
    pub exit: Option<VmExit>,
}

impl Runtime<'_> {
    /// Types Ctrl+Alt+Del on the i8042 keyboard. The guest's keyboard driver turns it into
    /// `ctrl_alt_del()`; Linux then restarts, which ends the VM through the i8042 reset line.
    fn ctrl_alt_del(&mut self) -> Result<ApiReply, ApiFault> {
        let kbd = self
            .vmm
            .devices()
            .i8042
            .as_ref()
            .ok_or_else(|| bad("Cannot send Ctrl+Alt+Del: the microVM has no i8042 keyboard controller."))?;
        if kbd.lock().unwrap_or_else(|e| e.into_inner()).ctrl_alt_del() {
            Ok(ApiReply::NoContent)
        } else {
            Err(bad(
                "Cannot send Ctrl+Alt+Del: the guest's keyboard is not taking keys (scanning disabled or its buffer is full).",
            ))
        }
    }
}

impl Backend for Runtime<'_> {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        match req {
            ApiRequest::GetInstanceInfo => {
                let state = if self.vmm.is_paused() {
                    InstanceState::Paused
                } else {
                    InstanceState::Running
                };
                info(self.meta, state)
            }
            ApiRequest::GetVersion => ApiReply::json(&Version {
                firecracker_version: version(),
            }),
            ApiRequest::GetMachineConfig => ApiReply::json(&self.config.machine_config.clone().unwrap_or_default()),
            ApiRequest::GetVmConfig => ApiReply::json(&*self.config),
            ApiRequest::PatchDrive(d) => self.patch_drive(&d),
            ApiRequest::PatchVm(v) => {
                let r = match v.state {
                    ApiVmState::Paused => self.vmm.pause(),
                    ApiVmState::Resumed => self.vmm.resume(),
                };
                r.map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot change the VM state: {}", chain(&e))))
            }
            ApiRequest::PutSnapshotCreate(p) => {
                let kind = match p.snapshot_type {
                    api::models::snapshot::SnapshotType::Diff => persist::SnapshotKind::Diff,
                    _ => persist::SnapshotKind::Full,
                };
                if !self.vmm.is_paused() {
                    return Err(bad(
                        "Cannot create a snapshot: the microVM must be paused (PATCH /vm Paused)",
                    ));
                }
                let mut last = 0u64;
                let info = persist::create(
                    self.vmm,
                    Path::new(&p.snapshot_path),
                    Path::new(&p.mem_file_path),
                    kind,
                    &mut |done: u64, total: u64| {
                        let pct = done * 100 / total.max(1);
                        if pct >= last + 25 {
                            last = pct;
                            log::info!("snapshot: memory {pct}% ({} of {} MiB)", done >> 20, total >> 20);
                        }
                    },
                )
                .map_err(|e| bad(format!("Cannot create the snapshot: {}", chain(&e))))?;
                log::info!(
                    "snapshot: {} + {} ({} MiB of {} MiB written) in {} ms",
                    info.state_path.display(),
                    info.mem_path.display(),
                    info.mem_written >> 20,
                    info.mem_bytes >> 20,
                    info.millis
                );
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutActions(a) => match a.action_type {
                ActionType::InstanceStart => Err(after_boot()),
                ActionType::SendCtrlAltDel => self.ctrl_alt_del(),
                ActionType::FlushMetrics => self.metrics.flush().map(|()| ApiReply::NoContent).map_err(bad),
            },
            ApiRequest::GetMetricsPrometheus => Ok(ApiReply::Text(self.metrics.prometheus())),
            ApiRequest::GetExitStats => Ok(ApiReply::Json(exit_stats(self.vmm))),
            ApiRequest::PutMachineConfig(_)
            | ApiRequest::PatchMachineConfig(_)
            | ApiRequest::PutBootSource(_)
            | ApiRequest::PutDrive(_)
            | ApiRequest::PutNetworkInterface(_)
            | ApiRequest::PutVsock(_)
            | ApiRequest::PutEntropy(_)
            | ApiRequest::PutBalloon(_)
            | ApiRequest::PutSnapshotLoad(_)
            | ApiRequest::PutLogger(_)
            | ApiRequest::PutMetrics(_)
            | ApiRequest::PutMmdsConfig(_)
            | ApiRequest::PutCpuConfig(_) => Err(after_boot()),
            ApiRequest::GetBalloon => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                let cfg = h.config();
                ApiReply::json(&api::models::balloon::Balloon {
                    amount_mib: cfg.amount_mib,
                    deflate_on_oom: cfg.deflate_on_oom,
                    stats_polling_interval_s: cfg.stats_polling_interval_s,
                    free_page_hinting: false,
                    free_page_reporting: cfg.free_page_reporting,
                })
            }
            ApiRequest::PatchBalloon(u) => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                h.set_target_mib(u.amount_mib)
                    .map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot set the balloon target: {}", chain(&e))))
            }
            ApiRequest::PatchBalloonStatistics(u) => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                h.set_stats_interval(u.stats_polling_interval_s)
                    .map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot change the statistics interval: {}", chain(&e))))
            }
            ApiRequest::GetBalloonStatistics => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                match h.stats() {
                    Some(st) => {
                        // Counters the guest did not report are left out, as in Firecracker.
                        let mut v = serde_json::to_value(&st).map_err(|e| ApiFault::new(500, e.to_string()))?;
                        if let Some(m) = v.as_object_mut() {
                            m.retain(|_, x| !x.is_null());
                        }
                        Ok(ApiReply::Json(v))
                    }
                    None => Err(bad(
                        "Statistics are not enabled (stats_polling_interval_s is 0) or none arrived yet.",
                    )),
                }
            }
            other => unsupported(&other),
        }
    }
}

impl Runtime<'_> {
    /// `PATCH /drives/{id}` after boot: a new backing file (same read-only and O_DIRECT
    /// settings; the guest is told the new capacity) and/or new rate limits.
    fn patch_drive(&mut self, d: &api::models::drive::PartialDrive) -> Result<ApiReply, ApiFault> {
        let dev = self
            .vmm
            .devices()
            .blocks
            .iter()
            .find(|(id, _)| *id == d.drive_id)
            .map(|(_, dev)| dev.clone())
            .ok_or_else(|| {
                bad(format!(
                    "No drive '{}' (PATCH only changes drives configured at boot).",
                    d.drive_id
                ))
            })?;
        let drive = self
            .vmm
            .config()
            .and_then(|c| c.drives.iter().find(|x| x.id == d.drive_id))
            .cloned()
            .ok_or_else(|| bad(format!("No configuration for drive '{}'.", d.drive_id)))?;
        // Open first: a path that cannot be used changes nothing.
        let image = match &d.path_on_host {
            Some(p) => Some(
                crate::builder::open_image(Path::new(p), drive.read_only, drive.direct)
                    .map_err(|e| bad(format!("Cannot open '{p}' for drive '{}': {e}", d.drive_id)))?,
            ),
            None => None,
        };
        let mut dev = dev.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rl) = &d.rate_limiter {
            let limits = devices::rate_limiter::Limits {
                bps: rl.bandwidth.as_ref().map_or(0, resources::per_second),
                iops: rl.ops.as_ref().map_or(0, resources::per_second),
                ..Default::default()
            };
            if !dev.update_rate_limit(limits) {
                return Err(bad(format!("Drive '{}' has no rate limiter.", d.drive_id)));
            }
            if let Some(c) = self
                .vmm
                .config_mut()
                .and_then(|c| c.drives.iter_mut().find(|x| x.id == d.drive_id))
            {
                (c.bps, c.iops) = (limits.bps, limits.iops);
            }
        }
        if let (Some(image), Some(p)) = (image, &d.path_on_host) {
            let size = dev
                .replace_image(image)
                .map_err(|e| bad(format!("Cannot use '{p}' for drive '{}': {}", d.drive_id, chain(&e))))?;
            log::info!("drive '{}' now on {p} ({size} bytes)", d.drive_id);
            if let Some(c) = self
                .vmm
                .config_mut()
                .and_then(|c| c.drives.iter_mut().find(|x| x.id == d.drive_id))
            {
                c.path = p.into();
            }
            if let Some(api) = self.config.drives.iter_mut().find(|x| x.drive_id == d.drive_id) {
                api.path_on_host = Some(p.clone());
            }
        }
        if let (Some(rl), Some(api)) = (
            &d.rate_limiter,
            self.config.drives.iter_mut().find(|x| x.drive_id == d.drive_id),
        ) {
            api.rate_limiter = Some(*rl);
        }
        Ok(ApiReply::NoContent)
    }
}
