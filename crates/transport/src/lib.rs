//! nvmf-transport
