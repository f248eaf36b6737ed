//! Reservation commands (NVMe Base 2.0 §7.2–7.5, §8.19) on a [`Controller`]:
//! the verbs behind `nvmf resv-register`, `resv-acquire`, `resv-release` and
//! `resv-report`, and the Reservation Notification log page (80h).

use bytes::Bytes;
use nvmf_proto::log::lid;
use nvmf_proto::resv::{
    opcode, report_sqe, resv_sqe, ReservationNotification, ReservationStatus, ResvCdw10, ResvKeys,
};
use nvmf_proto::tcp::HostData;

use crate::controller::Controller;
use crate::error::{Error, Result};

impl Controller {
    /// Reservation Register: `rrega` 0 register, 1 unregister, 2 replace;
    /// `cptpl` 0 no change, 2 PTPL off, 3 PTPL on.
    pub async fn resv_register(
        &self,
        nsid: u32,
        rrega: u8,
        iekey: bool,
        cptpl: u8,
        crkey: u64,
        nrkey: u64,
    ) -> Result<()> {
        let c = ResvCdw10 {
            action: rrega,
            iekey,
            rtype: 0,
            cptpl,
        };
        let data = ResvKeys { crkey, key2: nrkey }.encode();
        self.io(
            None,
            resv_sqe(opcode::REGISTER, nsid, c),
            HostData::ToController(Bytes::copy_from_slice(&data)),
        )
        .await
        .map(|_| ())
    }

    /// Reservation Acquire: `racqa` 0 acquire, 1 preempt, 2 preempt and abort;
    /// `rtype` 1..=6.
    pub async fn resv_acquire(
        &self,
        nsid: u32,
        racqa: u8,
        iekey: bool,
        rtype: u8,
        crkey: u64,
        prkey: u64,
    ) -> Result<()> {
        let c = ResvCdw10 {
            action: racqa,
            iekey,
            rtype,
            cptpl: 0,
        };
        let data = ResvKeys { crkey, key2: prkey }.encode();
        self.io(
            None,
            resv_sqe(opcode::ACQUIRE, nsid, c),
            HostData::ToController(Bytes::copy_from_slice(&data)),
        )
        .await
        .map(|_| ())
    }

    /// Reservation Release: `rrela` 0 release, 1 clear.
    pub async fn resv_release(
        &self,
        nsid: u32,
        rrela: u8,
        iekey: bool,
        rtype: u8,
        crkey: u64,
    ) -> Result<()> {
        let c = ResvCdw10 {
            action: rrela,
            iekey,
            rtype,
            cptpl: 0,
        };
        self.io(
            None,
            resv_sqe(opcode::RELEASE, nsid, c),
            HostData::ToController(Bytes::copy_from_slice(&crkey.to_le_bytes())),
        )
        .await
        .map(|_| ())
    }

    /// Reservation Report of `len` bytes (a multiple of 4, at least one header);
    /// `eds` asks for the extended structure with 128-bit host identifiers.
    pub async fn resv_report(&self, nsid: u32, len: u32, eds: bool) -> Result<ReservationStatus> {
        let len = len.div_ceil(4) * 4;
        let c = self
            .io(
                None,
                report_sqe(nsid, len, eds),
                HostData::FromController(len),
            )
            .await?;
        ReservationStatus::decode(&c.data_contiguous(), eds).ok_or_else(|| {
            Error::Invalid(format!(
                "reservation report shorter than its header ({len} bytes)"
            ))
        })
    }

    /// Reads one Reservation Notification log page (80h), which removes it
    /// from the controller's queue.
    pub async fn resv_notification(&self) -> Result<ReservationNotification> {
        let b = self.get_log_page(lid::RESERVATION, 0xffff_ffff, 64).await?;
        ReservationNotification::decode(&b)
            .ok_or_else(|| Error::Invalid("short reservation notification log page".into()))
    }
}
