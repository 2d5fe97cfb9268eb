//! dsproxy-testfront
