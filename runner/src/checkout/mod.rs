//! Source checkout with git2 (written by the checkout work; see wire::Checkout).
