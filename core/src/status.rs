//! Call outcomes: gRPC's 17 status codes (the lingua franca of every transport) and `Status`.

use std::fmt;

use crate::metadata::Metadata;

/// A call's status code. The numbering is gRPC's, so every transport carries the same meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The call was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error with no better code.
    Unknown = 2,
    /// The client sent an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity was not found.
    NotFound = 5,
    /// The entity a client tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not run this call.
    PermissionDenied = 7,
    /// A resource (message size, quota, memory) was exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the call.
    FailedPrecondition = 9,
    /// The call was aborted (concurrency conflict).
    Aborted = 10,
    /// The call went past the valid range.
    OutOfRange = 11,
    /// The method is not implemented by the server.
    Unimplemented = 12,
    /// An internal invariant broke.
    Internal = 13,
    /// The service is unavailable (connection refused or lost): usually retryable.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The caller's credentials are missing or invalid.
    Unauthenticated = 16,
}

impl Code {
    /// All 17 codes, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a number; numbers gRPC does not define map to `Unknown`, as gRPC does.
    pub fn from_u32(n: u32) -> Code {
        Code::ALL.get(n as usize).copied().unwrap_or(Code::Unknown)
    }

    /// The code's number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The canonical upper-case name, e.g. `DEADLINE_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses a canonical name (case-insensitive) or a number.
    pub fn parse(s: &str) -> Option<Code> {
        if let Ok(n) = s.parse::<u32>() {
            return Code::ALL.get(n as usize).copied();
        }
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a failed call: a code, a UTF-8 message and the trailing metadata sent with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    metadata: Metadata,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            metadata: Metadata::new(),
        }
    }

    /// The OK status (used as the final status of successful streams).
    pub fn ok() -> Status {
        Status::new(Code::Ok, String::new())
    }

    /// `CANCELLED` with a message.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }

    /// `DEADLINE_EXCEEDED` with a message.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }

    /// `UNAVAILABLE` with a message.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// `INTERNAL` with a message.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// `INVALID_ARGUMENT` with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// `RESOURCE_EXHAUSTED` with a message.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// `UNIMPLEMENTED` with a message.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// Attaches trailing metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.metadata = metadata;
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message (UTF-8, carried byte-exact).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Trailing metadata sent with the status.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Takes the trailing metadata out.
    pub fn take_metadata(&mut self) -> Metadata {
        std::mem::take(&mut self.metadata)
    }

    /// True for `OK`.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_is_grpc() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_u32() as usize, i);
            assert_eq!(Code::from_u32(i as u32), *c);
            assert_eq!(Code::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(
            Code::parse("deadline_exceeded"),
            Some(Code::DeadlineExceeded)
        );
        assert_eq!(Code::parse("14"), Some(Code::Unavailable));
        assert_eq!(Code::parse("nope"), None);
    }
}
