//! Legacy PC devices: the 16550 UART on COM1 and the i8042 keyboard controller (an AT keyboard
//! for Ctrl+Alt+Del, and the guest's reset line), and the ACPI PM1 registers (guest power-off).

pub mod acpi_pm;
pub mod i8042;
pub mod serial;
pub mod serial_metrics;

pub use acpi_pm::AcpiPm;
pub use i8042::{I8042Metrics, I8042};
pub use serial::SerialConsole;
pub use serial_metrics::UartMetrics;
