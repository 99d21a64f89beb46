//! Table-driven tests of every algorithm at exact instants.
