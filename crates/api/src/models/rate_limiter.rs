//! `RateLimiter` and `TokenBucket`: the I/O limits of drives, net interfaces and entropy.

use serde::{Deserialize, Serialize};

use super::Validate;

/// A token bucket: `size` tokens refilled every `refill_time` ms, plus a one-time burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill `size` tokens.
    pub refill_time: u64,
}

/// Independent bytes/s (`bandwidth`) and operations/s (`ops`) limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl Validate for TokenBucket {}
impl Validate for RateLimiter {}
