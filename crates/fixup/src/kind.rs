//! The closed set of instructions the fix-up completes, for logging and per-kind counters.

/// An instruction the fix-up knows how to complete (or to turn into the right exception).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Int3,
    IntN,
    Into,
    Fwait,
    Popcnt,
    Lzcnt,
    Tzcnt,
    Crc32,
    Clac,
    Stac,
    Xgetbv,
    Rdtscp,
}

impl Kind {
    /// Every kind, in declaration order (e.g. to register one counter per kind).
    pub const ALL: [Kind; 12] = [
        Kind::Int3,
        Kind::IntN,
        Kind::Into,
        Kind::Fwait,
        Kind::Popcnt,
        Kind::Lzcnt,
        Kind::Tzcnt,
        Kind::Crc32,
        Kind::Clac,
        Kind::Stac,
        Kind::Xgetbv,
        Kind::Rdtscp,
    ];

    /// The assembler mnemonic, e.g. "popcnt".
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Int3 => "int3",
            Kind::IntN => "int n",
            Kind::Into => "into",
            Kind::Fwait => "fwait",
            Kind::Popcnt => "popcnt",
            Kind::Lzcnt => "lzcnt",
            Kind::Tzcnt => "tzcnt",
            Kind::Crc32 => "crc32",
            Kind::Clac => "clac",
            Kind::Stac => "stac",
            Kind::Xgetbv => "xgetbv",
            Kind::Rdtscp => "rdtscp",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
