//! Log pages (NVMe Base 2.0 §5.16.1) and the Discovery Log Page (NVMe Base 2.0
//! §5.16.1.23, log identifier 70h).

use crate::le::*;

/// Log page identifiers (NVMe Base 2.0 Figure 202).
pub mod lid {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FW_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NS: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const CMD_EFFECTS: u8 = 0x05;
    /// Asymmetric Namespace Access.
    pub const ANA: u8 = 0x0C;
    /// Discovery.
    pub const DISCOVERY: u8 = 0x70;
    /// Reservation Notification (NVMe Base 2.0 §5.16.1.24).
    pub const RESERVATION: u8 = 0x80;
}

/// One Error Information log entry, 64 bytes (NVMe Base 2.0 Figure 205).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorLogEntry {
    /// Error Count: unique, increasing; 0 = invalid entry.
    pub error_count: u64,
    /// Submission Queue ID.
    pub sqid: u16,
    /// Command ID.
    pub cid: u16,
    /// Status field (as in the CQE, phase bit included).
    pub status: u16,
    /// Parameter Error Location.
    pub param_error_location: u16,
    /// LBA.
    pub lba: u64,
    /// Namespace.
    pub nsid: u32,
}

impl ErrorLogEntry {
    /// Size of one entry.
    pub const SIZE: usize = 64;

    /// Encodes 64 bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u64(&mut b, 0, self.error_count);
        put_u16(&mut b, 8, self.sqid);
        put_u16(&mut b, 10, self.cid);
        put_u16(&mut b, 12, self.status);
        put_u16(&mut b, 14, self.param_error_location);
        put_u64(&mut b, 16, self.lba);
        put_u32(&mut b, 24, self.nsid);
        b
    }

    /// Decodes 64 bytes.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            error_count: u64_at(b, 0),
            sqid: u16_at(b, 8),
            cid: u16_at(b, 10),
            status: u16_at(b, 12),
            param_error_location: u16_at(b, 14),
            lba: u64_at(b, 16),
            nsid: u32_at(b, 24),
        }
    }
}

/// SMART / Health Information, 512 bytes (NVMe Base 2.0 Figure 207).
///
/// The 128-bit counters count in the units the spec gives (data units are
/// thousands of 512-byte units, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmartLog {
    /// Critical Warning bits.
    pub critical_warning: u8,
    /// Composite Temperature in Kelvin.
    pub temperature: u16,
    /// Available Spare, percent.
    pub avail_spare: u8,
    /// Available Spare Threshold, percent.
    pub spare_thresh: u8,
    /// Percentage Used.
    pub percent_used: u8,
    /// Data Units Read.
    pub data_units_read: u128,
    /// Data Units Written.
    pub data_units_written: u128,
    /// Host Read Commands.
    pub host_reads: u128,
    /// Host Write Commands.
    pub host_writes: u128,
    /// Controller Busy Time, minutes.
    pub ctrl_busy_time: u128,
    /// Power Cycles.
    pub power_cycles: u128,
    /// Power On Hours.
    pub power_on_hours: u128,
    /// Unsafe Shutdowns.
    pub unsafe_shutdowns: u128,
    /// Media and Data Integrity Errors.
    pub media_errors: u128,
    /// Number of Error Information Log Entries.
    pub num_err_log_entries: u128,
}

impl SmartLog {
    /// Size of the page.
    pub const SIZE: usize = 512;

    /// Encodes 512 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u8(&mut b, 0, self.critical_warning);
        put_u16(&mut b, 1, self.temperature);
        put_u8(&mut b, 3, self.avail_spare);
        put_u8(&mut b, 4, self.spare_thresh);
        put_u8(&mut b, 5, self.percent_used);
        put_u128(&mut b, 32, self.data_units_read);
        put_u128(&mut b, 48, self.data_units_written);
        put_u128(&mut b, 64, self.host_reads);
        put_u128(&mut b, 80, self.host_writes);
        put_u128(&mut b, 96, self.ctrl_busy_time);
        put_u128(&mut b, 112, self.power_cycles);
        put_u128(&mut b, 128, self.power_on_hours);
        put_u128(&mut b, 144, self.unsafe_shutdowns);
        put_u128(&mut b, 160, self.media_errors);
        put_u128(&mut b, 176, self.num_err_log_entries);
        b
    }

    /// Decodes the page.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            critical_warning: u8_at(b, 0),
            temperature: u16_at(b, 1),
            avail_spare: u8_at(b, 3),
            spare_thresh: u8_at(b, 4),
            percent_used: u8_at(b, 5),
            data_units_read: u128_at(b, 32),
            data_units_written: u128_at(b, 48),
            host_reads: u128_at(b, 64),
            host_writes: u128_at(b, 80),
            ctrl_busy_time: u128_at(b, 96),
            power_cycles: u128_at(b, 112),
            power_on_hours: u128_at(b, 128),
            unsafe_shutdowns: u128_at(b, 144),
            media_errors: u128_at(b, 160),
            num_err_log_entries: u128_at(b, 176),
        }
    }
}

/// Firmware Slot Information, 512 bytes (NVMe Base 2.0 Figure 209).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: bits 2:0 active slot.
    pub afi: u8,
    /// Firmware revisions of slots 1 to 7 (8 ASCII bytes each).
    pub frs: [String; 7],
}

impl FirmwareSlotLog {
    /// Size of the page.
    pub const SIZE: usize = 512;

    /// Encodes 512 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put_u8(&mut b, 0, self.afi);
        for (i, r) in self.frs.iter().enumerate() {
            if !r.is_empty() {
                put_str(&mut b, 8 + 8 * i, 8, r, b' ');
            }
        }
        b
    }

    /// Decodes the page.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            afi: u8_at(b, 0),
            frs: std::array::from_fn(|i| str_at(b, 8 + 8 * i, 8)),
        }
    }
}

/// Encodes a Changed Namespace List (NVMe Base 2.0 §5.16.1.5): up to 1024 NSIDs;
/// more than that is reported as a single FFFFFFFFh entry.
pub fn encode_changed_ns_list(nsids: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    if nsids.len() > 1024 {
        put_u32(&mut b, 0, 0xffff_ffff);
    } else {
        for (i, n) in nsids.iter().enumerate() {
            put_u32(&mut b, 4 * i, *n);
        }
    }
    b
}

/// Commands Supported and Effects, 4096 bytes (NVMe Base 2.0 Figure 210):
/// one dword per admin opcode, then one per I/O opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEffectsLog {
    /// Admin Command Supported entries.
    pub acs: [u32; 256],
    /// I/O Command Supported entries.
    pub iocs: [u32; 256],
}

impl Default for CommandEffectsLog {
    fn default() -> Self {
        Self {
            acs: [0; 256],
            iocs: [0; 256],
        }
    }
}

/// Effects bits (NVMe Base 2.0 Figure 211).
pub mod effects {
    /// Command Supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace Capability Change.
    pub const NCC: u32 = 1 << 2;
}

impl CommandEffectsLog {
    /// Size of the page.
    pub const SIZE: usize = 4096;

    /// Encodes 4096 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        for (i, v) in self.acs.iter().enumerate() {
            put_u32(&mut b, 4 * i, *v);
        }
        for (i, v) in self.iocs.iter().enumerate() {
            put_u32(&mut b, 1024 + 4 * i, *v);
        }
        b
    }

    /// Decodes the page.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            acs: std::array::from_fn(|i| u32_at(b, 4 * i)),
            iocs: std::array::from_fn(|i| u32_at(b, 1024 + 4 * i)),
        }
    }
}

/// ANA states (NVMe Base 2.0 §8.1.3, Figure 226 ANA State field).
pub mod ana_state {
    /// ANA Optimized.
    pub const OPTIMIZED: u8 = 0x01;
    /// ANA Non-Optimized.
    pub const NON_OPTIMIZED: u8 = 0x02;
    /// ANA Inaccessible.
    pub const INACCESSIBLE: u8 = 0x03;
    /// ANA Persistent Loss.
    pub const PERSISTENT_LOSS: u8 = 0x04;
    /// ANA Change (in transition).
    pub const CHANGE: u8 = 0x0F;
}

/// Get Log Page LSP bit 0 for the ANA log: Return Groups Only (NVMe Base 2.0
/// §5.16.1.12), CDW10 bit 8.
pub const ANA_LSP_RGO: u32 = 1 << 8;

/// One ANA group descriptor (NVMe Base 2.0 Figure 226): 32 bytes, then the
/// NSIDs of the group's namespaces in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaGroup {
    /// ANA Group ID.
    pub grpid: u32,
    /// Change Count.
    pub chgcnt: u64,
    /// ANA State.
    pub state: u8,
    /// Namespaces in the group (empty when the host asked for groups only).
    pub nsids: Vec<u32>,
}

/// Encodes an ANA log page (NVMe Base 2.0 Figure 225): CHGCNT, the number of
/// descriptors, then the descriptors.
pub fn encode_ana_log(chgcnt: u64, groups: &[AnaGroup]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    put_u64(&mut b, 0, chgcnt);
    put_u16(&mut b, 8, groups.len() as u16);
    for g in groups {
        let mut d = vec![0u8; 32 + 4 * g.nsids.len()];
        put_u32(&mut d, 0, g.grpid);
        put_u32(&mut d, 4, g.nsids.len() as u32);
        put_u64(&mut d, 8, g.chgcnt);
        put_u8(&mut d, 16, g.state);
        for (i, n) in g.nsids.iter().enumerate() {
            put_u32(&mut d, 32 + 4 * i, *n);
        }
        b.extend_from_slice(&d);
    }
    b
}

/// Decodes an ANA log page: (CHGCNT, descriptors). Stops at the first
/// descriptor the buffer does not hold whole, so a truncated or hostile page
/// gives what it has and never panics.
pub fn decode_ana_log(b: &[u8]) -> (u64, Vec<AnaGroup>) {
    let chgcnt = u64_at(b, 0);
    let n = usize::from(u16_at(b, 8));
    let mut groups = Vec::new();
    let mut off = 16usize;
    for _ in 0..n {
        let Some(d) = b.get(off..off + 32) else { break };
        let nn = u32_at(d, 4) as usize;
        let Some(ids) = nn
            .checked_mul(4)
            .and_then(|l| b.get(off + 32..(off + 32).checked_add(l)?))
        else {
            break;
        };
        groups.push(AnaGroup {
            grpid: u32_at(d, 0),
            chgcnt: u64_at(d, 8),
            state: u8_at(d, 16) & 0x0f,
            nsids: ids.chunks_exact(4).map(|c| u32_at(c, 0)).collect(),
        });
        off += 32 + 4 * nn;
    }
    (chgcnt, groups)
}

/// Transport types in TRTYPE (NVMe-oF 1.1 Figure 38).
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
}

/// Address families in ADRFAM.
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
}

/// The RDMA Transport Specific Address Subtype of a discovery log entry
/// (NVMe-oF 1.1 §7.3, Figure "RDMA Transport Specific Address Subtype"; Linux
/// `union nvmf_tsas` member `rdma`): RDMA_QPTYPE @0, RDMA_PRTYPE @1, RDMA_CMS
/// @2, reserved 3..8, RDMA_PKEY (u16) @8, reserved to 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaTsas {
    /// RDMA QP Service Type ([`RdmaTsas::QPTYPE_CONNECTED`]).
    pub qptype: u8,
    /// RDMA Provider Type ([`RdmaTsas::PRTYPE_NOT_SPECIFIED`] ...).
    pub prtype: u8,
    /// RDMA Connection Management Service ([`RdmaTsas::CMS_RDMA_CM`]).
    pub cms: u8,
    /// Partition key, for the AF_IB address family.
    pub pkey: u16,
}

impl RdmaTsas {
    /// RDMA_QPTYPE 1: Reliable Connected (Linux `NVMF_RDMA_QPTYPE_CONNECTED`).
    pub const QPTYPE_CONNECTED: u8 = 1;
    /// RDMA_QPTYPE 2: Reliable Datagram (`NVMF_RDMA_QPTYPE_DATAGRAM`).
    pub const QPTYPE_DATAGRAM: u8 = 2;
    /// RDMA_PRTYPE 1: no provider specified (`NVMF_RDMA_PRTYPE_NOT_SPECIFIED`).
    pub const PRTYPE_NOT_SPECIFIED: u8 = 1;
    /// RDMA_PRTYPE 2: InfiniBand.
    pub const PRTYPE_IB: u8 = 2;
    /// RDMA_PRTYPE 3: RoCE (v1).
    pub const PRTYPE_ROCE: u8 = 3;
    /// RDMA_PRTYPE 4: RoCE v2.
    pub const PRTYPE_ROCEV2: u8 = 4;
    /// RDMA_PRTYPE 5: iWARP.
    pub const PRTYPE_IWARP: u8 = 5;
    /// RDMA_CMS 1: the RDMA IP connection manager (`NVMF_RDMA_CMS_RDMA_CM`).
    pub const CMS_RDMA_CM: u8 = 1;

    /// What Linux nvmet puts in every RDMA port's entry
    /// (`nvmet_port_init_tsas_rdma`): connected, not specified, RDMA CM, pkey 0.
    pub fn nvmet_default() -> Self {
        Self {
            qptype: Self::QPTYPE_CONNECTED,
            prtype: Self::PRTYPE_NOT_SPECIFIED,
            cms: Self::CMS_RDMA_CM,
            pkey: 0,
        }
    }

    /// The 256-byte TSAS field.
    pub fn encode(&self) -> [u8; 256] {
        let mut b = [0u8; 256];
        put_u8(&mut b, 0, self.qptype);
        put_u8(&mut b, 1, self.prtype);
        put_u8(&mut b, 2, self.cms);
        put_u16(&mut b, 8, self.pkey);
        b
    }

    /// Reads the RDMA fields of a TSAS field.
    pub fn decode(tsas: &[u8; 256]) -> Self {
        Self {
            qptype: u8_at(tsas, 0),
            prtype: u8_at(tsas, 1),
            cms: u8_at(tsas, 2),
            pkey: u16_at(tsas, 8),
        }
    }
}

/// Subsystem types in SUBTYPE.
pub mod subtype {
    /// Referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// An NVM subsystem.
    pub const NVME: u8 = 2;
    /// The current discovery subsystem.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// One 1024-byte Discovery Log Page entry (NVMe Base 2.0 Figure 262).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLogEntry {
    /// Transport Type.
    pub trtype: u8,
    /// Address Family.
    pub adrfam: u8,
    /// Subsystem Type.
    pub subtype: u8,
    /// Transport Requirements.
    pub treq: u8,
    /// Port ID.
    pub portid: u16,
    /// Controller ID (FFFFh: dynamic).
    pub cntlid: u16,
    /// Admin Max SQ Size.
    pub asqsz: u16,
    /// Entry Flags.
    pub eflags: u16,
    /// Transport Service Identifier (the TCP port, as text).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport Address (the IP address, as text).
    pub traddr: String,
    /// Transport Specific Address Subtype: for TCP, byte 0 is SECTYPE; for
    /// RDMA see [`RdmaTsas`].
    pub tsas: [u8; 256],
}

impl Default for DiscoveryLogEntry {
    fn default() -> Self {
        Self {
            trtype: 0,
            adrfam: 0,
            subtype: 0,
            treq: 0,
            portid: 0,
            cntlid: 0,
            asqsz: 0,
            eflags: 0,
            trsvcid: String::new(),
            subnqn: String::new(),
            traddr: String::new(),
            tsas: [0; 256],
        }
    }
}

impl DiscoveryLogEntry {
    /// Sets TRTYPE to RDMA and fills TSAS with `tsas` (NVMe-oF 1.1 §7.3).
    pub fn set_rdma(&mut self, tsas: RdmaTsas) {
        self.trtype = trtype::RDMA;
        self.tsas = tsas.encode();
    }

    /// The RDMA TSAS fields, if this is an RDMA entry.
    pub fn rdma_tsas(&self) -> Option<RdmaTsas> {
        (self.trtype == trtype::RDMA).then(|| RdmaTsas::decode(&self.tsas))
    }

    /// Size of one entry.
    pub const SIZE: usize = 1024;

    /// Encodes 1024 bytes. TRSVCID and TRADDR are space padded as the spec asks
    /// for ASCII string fields; SUBNQN is NUL padded.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        put_u8(&mut b, 0, self.trtype);
        put_u8(&mut b, 1, self.adrfam);
        put_u8(&mut b, 2, self.subtype);
        put_u8(&mut b, 3, self.treq);
        put_u16(&mut b, 4, self.portid);
        put_u16(&mut b, 6, self.cntlid);
        put_u16(&mut b, 8, self.asqsz);
        put_u16(&mut b, 10, self.eflags);
        put_str(&mut b, 32, 32, &self.trsvcid, b' ');
        put_str(&mut b, 256, 256, &self.subnqn, 0);
        put_str(&mut b, 512, 256, &self.traddr, b' ');
        put(&mut b, 768, &self.tsas);
        b
    }

    /// Decodes one entry.
    pub fn decode(b: &[u8]) -> Self {
        Self {
            trtype: u8_at(b, 0),
            adrfam: u8_at(b, 1),
            subtype: u8_at(b, 2),
            treq: u8_at(b, 3),
            portid: u16_at(b, 4),
            cntlid: u16_at(b, 6),
            asqsz: u16_at(b, 8),
            eflags: u16_at(b, 10),
            trsvcid: str_at(b, 32, 32),
            subnqn: str_at(b, 256, 256),
            traddr: str_at(b, 512, 256),
            tsas: array_at(b, 768),
        }
    }
}

/// The Discovery Log Page: a 1024-byte header and its entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryLog {
    /// Generation Counter: changes whenever the log changes.
    pub genctr: u64,
    /// Number of records the controller holds (may exceed `entries.len()` on a partial read).
    pub numrec: u64,
    /// Record Format (0).
    pub recfmt: u16,
    /// The entries read.
    pub entries: Vec<DiscoveryLogEntry>,
}

impl DiscoveryLog {
    /// Size of the header.
    pub const HEADER_SIZE: usize = 1024;

    /// Encodes the whole page.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::HEADER_SIZE];
        put_u64(&mut b, 0, self.genctr);
        put_u64(&mut b, 8, self.numrec);
        put_u16(&mut b, 16, self.recfmt);
        for e in &self.entries {
            b.extend_from_slice(&e.encode());
        }
        b
    }

    /// Decodes a page read from offset 0: the header, then as many whole entries as
    /// both NUMREC and the buffer allow.
    pub fn decode(b: &[u8]) -> Self {
        let numrec = u64_at(b, 8);
        let avail = b.len().saturating_sub(Self::HEADER_SIZE) / DiscoveryLogEntry::SIZE;
        let n = usize::try_from(numrec).unwrap_or(usize::MAX).min(avail);
        let entries = (0..n)
            .filter_map(|i| b.get(Self::HEADER_SIZE + i * DiscoveryLogEntry::SIZE..))
            .map(DiscoveryLogEntry::decode)
            .collect();
        Self {
            genctr: u64_at(b, 0),
            numrec,
            recfmt: u16_at(b, 16),
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_round_trip() {
        let e = DiscoveryLogEntry {
            trtype: trtype::TCP,
            adrfam: adrfam::IPV4,
            subtype: subtype::NVME,
            treq: 2,
            portid: 1,
            cntlid: 0xffff,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420".into(),
            subnqn: "nqn.2024-01.io.test:sub1".into(),
            traddr: "127.0.0.1".into(),
            tsas: [0; 256],
        };
        let b = e.encode();
        assert_eq!(b.len(), 1024);
        assert_eq!(&b[32..38], b"4420  ");
        assert_eq!(DiscoveryLogEntry::decode(&b), e);
        let log = DiscoveryLog {
            genctr: 5,
            numrec: 1,
            recfmt: 0,
            entries: vec![e],
        };
        let page = log.encode();
        assert_eq!(page.len(), 2048);
        assert_eq!(DiscoveryLog::decode(&page), log);
        // A header-only read gives the count but no entries.
        assert!(DiscoveryLog::decode(&page[..1024]).entries.is_empty());
        // A hostile NUMREC does not allocate past the buffer.
        let mut bad = page.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(DiscoveryLog::decode(&bad).entries.len(), 1);
    }

    #[test]
    fn rdma_tsas_matches_nvmet() {
        // nvmet_port_init_tsas_rdma: memset 0, qptype 1, prtype 1, cms 1.
        let mut want = [0u8; 256];
        want[..3].copy_from_slice(&[1, 1, 1]);
        assert_eq!(RdmaTsas::nvmet_default().encode(), want);
        let mut e = DiscoveryLogEntry {
            adrfam: adrfam::IPV4,
            subtype: subtype::NVME,
            trsvcid: "4420".into(),
            traddr: "10.0.2.15".into(),
            subnqn: "nqn.2024-01.io.test:sub1".into(),
            ..Default::default()
        };
        assert_eq!(e.rdma_tsas(), None);
        let t = RdmaTsas {
            pkey: 0xffff,
            prtype: RdmaTsas::PRTYPE_ROCEV2,
            ..RdmaTsas::nvmet_default()
        };
        e.set_rdma(t);
        let b = e.encode();
        // TRTYPE @0 = 1 (RDMA); TSAS @768: qptype, prtype, cms, 5 reserved, pkey le16.
        assert_eq!(b[0], 1);
        assert_eq!(&b[768..780], &[1, 4, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
        let d = DiscoveryLogEntry::decode(&b);
        assert_eq!(d.rdma_tsas(), Some(t));
        assert_eq!(d, e);
    }

    #[test]
    fn other_pages() {
        let s = SmartLog {
            temperature: 300,
            host_reads: 7,
            power_on_hours: 1,
            ..Default::default()
        };
        assert_eq!(SmartLog::decode(&s.encode()), s);
        assert_eq!(s.encode().len(), 512);
        let e = ErrorLogEntry {
            error_count: 1,
            sqid: 1,
            cid: 2,
            status: 0x8004,
            lba: 9,
            nsid: 1,
            param_error_location: 0,
        };
        assert_eq!(ErrorLogEntry::decode(&e.encode()), e);
        let f = FirmwareSlotLog {
            afi: 1,
            frs: [
                "0.1.0".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        assert_eq!(FirmwareSlotLog::decode(&f.encode()), f);
        let mut c = CommandEffectsLog::default();
        c.acs[6] = effects::CSUPP;
        c.iocs[1] = effects::CSUPP | effects::LBCC;
        assert_eq!(CommandEffectsLog::decode(&c.encode()), c);
        assert_eq!(
            encode_changed_ns_list(&[1, 2])[..8],
            [1, 0, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(encode_changed_ns_list(&[1; 1025])[..4], [0xff; 4]);
        let ana = encode_ana_log(
            1,
            &[AnaGroup {
                grpid: 1,
                chgcnt: 1,
                state: ana_state::OPTIMIZED,
                nsids: vec![1, 2],
            }],
        );
        assert_eq!(ana.len(), 16 + 32 + 8);
        let groups = vec![
            AnaGroup {
                grpid: 1,
                chgcnt: 3,
                state: ana_state::INACCESSIBLE,
                nsids: vec![1, 5],
            },
            AnaGroup {
                grpid: 2,
                chgcnt: 0,
                state: ana_state::NON_OPTIMIZED,
                nsids: vec![],
            },
        ];
        let page = encode_ana_log(7, &groups);
        assert_eq!(page[8..10], [2, 0]);
        assert_eq!(page[16 + 16], ana_state::INACCESSIBLE);
        assert_eq!(decode_ana_log(&page), (7, groups.clone()));
        // Truncated: the whole first descriptor only.
        assert_eq!(decode_ana_log(&page[..16 + 40]).1, groups[..1]);
        // A hostile NNSID does not read past the buffer.
        let mut bad = page.clone();
        bad[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_ana_log(&bad).1.is_empty());
    }
}
