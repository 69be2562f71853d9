//! ferrolite
