//! NVMe/TCP transport binding (NVMe/TCP Transport Specification 1.0): PDUs, digests,
//! the streaming decoder and the sans-I/O queue-pair state machines of both ends.

pub mod controller;
pub mod decoder;
pub mod digest;
pub mod error;
pub mod host;
pub mod idmap;
pub mod pdu;
pub mod tx;

pub use controller::{
    ControllerEvent, ControllerQueue, ControllerQueueConfig, IncomingCommand, UsageError,
};
pub use decoder::{Decoder, DecoderConfig, Received, Side};
pub use error::FatalError;
pub use host::{Completion, HostData, HostEvent, HostQueue, HostQueueConfig, SubmitError};
pub use pdu::{Digests, Fes, Pdu, PduEncoder, PduType};
pub use tx::TxQueue;
