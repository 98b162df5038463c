//! Legacy PC devices: the 16550 UART on COM1 and the i8042 keyboard controller (an AT keyboard
//! for Ctrl+Alt+Del, and the guest's reset line).

pub mod i8042;
pub mod serial;
pub mod serial_metrics;

pub use i8042::{I8042Metrics, I8042};
pub use serial::SerialConsole;
pub use serial_metrics::UartMetrics;
