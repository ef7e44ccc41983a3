//! (balancer: work in progress)
