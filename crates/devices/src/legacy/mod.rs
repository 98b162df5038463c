//! Legacy PC devices: the 16550 UART on COM1 and the i8042 controller (used by guests to reset).

pub mod i8042;
pub mod serial;
pub mod serial_metrics;

pub use i8042::I8042;
pub use serial::SerialConsole;
pub use serial_metrics::UartMetrics;
