//! The few raw system calls rustix does not wrap safely; the only `unsafe` code in rbuild.

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux;

#[cfg(target_os = "linux")]
pub(crate) use linux::*;
