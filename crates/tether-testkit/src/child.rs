//! A child process that cannot outlive the test that started it.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A child process that is killed (SIGKILL) and reaped when dropped: also when the test
/// panics first, so a failed assertion never leaves the process running. Derefs to the
/// [`Child`] for everything else (its pipes, `try_wait`, its id).
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }
}

impl Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // Fails only if it exited meanwhile; wait() then reaps it either way.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
