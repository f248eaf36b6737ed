//! nvmf-controller
