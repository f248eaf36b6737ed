//! Feature identifiers (NVMe Base 2.0 §5.27.1, Figure 317) and the Asynchronous Event
//! completion encoding (§5.2, Figure 146).

/// Feature identifiers.
pub mod fid {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    /// Host Identifier.
    pub const HOST_IDENTIFIER: u8 = 0x81;
    /// Reservation Notification Mask (namespace specific; NVMe Base 2.0 §5.27.1.21).
    pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
    /// Reservation Persistence (namespace specific; NVMe Base 2.0 §5.27.1.22).
    pub const RESERVATION_PERSISTENCE: u8 = 0x83;
}

/// Number of Queues value (CDW11 and completion DW0): NSQR bits 15:0, NCQR bits 31:16, both 0's based.
pub fn number_of_queues(nsq: u16, ncq: u16) -> u32 {
    u32::from(nsq.saturating_sub(1)) | (u32::from(ncq.saturating_sub(1)) << 16)
}

/// Asynchronous Event Configuration bits (NVMe Base 2.0 Figure 326).
pub mod aec {
    /// Namespace Attribute Notices.
    pub const NS_ATTRIBUTE: u32 = 1 << 8;
    /// Firmware Activation Notices.
    pub const FW_ACTIVATION: u32 = 1 << 9;
    /// Asymmetric Namespace Access Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notification.
    pub const DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
}

/// Asynchronous event types (NVMe Base 2.0 Figure 146).
pub mod aen_type {
    /// Error status.
    pub const ERROR: u8 = 0;
    /// SMART / Health status.
    pub const SMART: u8 = 1;
    /// Notice.
    pub const NOTICE: u8 = 2;
    /// I/O Command specific status (information 0h: Reservation Log Page
    /// Available, log 80h; NVMe Base 2.0 Figure 150).
    pub const IO_COMMAND_SPECIFIC: u8 = 6;
}

/// Notice information values (NVMe Base 2.0 Figure 149).
pub mod aen_notice {
    /// Namespace Attribute Changed: read log 04h.
    pub const NS_ATTRIBUTE_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FW_ACTIVATION: u8 = 0x01;
    /// Asymmetric Namespace Access Change: read log 0Ch.
    pub const ANA_CHANGE: u8 = 0x03;
    /// Discovery Log Page Change: read log 70h.
    pub const DISCOVERY_LOG_CHANGE: u8 = 0xF0;
}

/// Completion DW0 of an Asynchronous Event Request: type bits 2:0, information
/// bits 15:8 and the log page to read bits 23:16.
pub fn aen_dw0(event_type: u8, info: u8, log_page: u8) -> u32 {
    u32::from(event_type & 7) | (u32::from(info) << 8) | (u32::from(log_page) << 16)
}

/// Splits an Asynchronous Event completion DW0 into (type, information, log page).
pub fn aen_fields(dw0: u32) -> (u8, u8, u8) {
    (
        (dw0 & 7) as u8,
        ((dw0 >> 8) & 0xff) as u8,
        ((dw0 >> 16) & 0xff) as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(number_of_queues(4, 4), 0x0003_0003);
        let dw0 = aen_dw0(
            aen_type::NOTICE,
            aen_notice::NS_ATTRIBUTE_CHANGED,
            crate::log::lid::CHANGED_NS,
        );
        assert_eq!(dw0, 0x0004_0002);
        assert_eq!(aen_fields(dw0), (2, 0, 4));
    }
}
