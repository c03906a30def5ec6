//! The path of the facade the generated code names: found in the user's `Cargo.toml` by
//! `proc-macro-crate` (renamed dependencies included), unless `#[service(crate = path)]`
//! names it. Every facade leads to the same items (its hidden `__private::xrpc_async`).

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::Span;
use syn::Path;

/// The facades that re-export the attribute, in the order they are looked for.
const FACADES: [&str; 5] = [
    "xrpc",
    "xrpc-tokio",
    "xrpc-smol",
    "xrpc-blocking",
    "xrpc-async",
];

/// The path of the first facade the crate being compiled depends on.
pub(crate) fn facade() -> syn::Result<Path> {
    for name in FACADES {
        match crate_name(name) {
            Ok(FoundCrate::Name(n)) => return Ok(path(&n)),
            // The facade's own tests, examples and doc tests reach it by its name.
            Ok(FoundCrate::Itself) => return Ok(path(&name.replace('-', "_"))),
            Err(_) => {}
        }
    }
    Err(syn::Error::new(
        Span::call_site(),
        "#[service] found none of xrpc, xrpc-tokio, xrpc-smol, xrpc-blocking among the \
         dependencies: add one, or name it with #[service(crate = path::to::it)]",
    ))
}

fn path(name: &str) -> Path {
    let ident = syn::Ident::new(name, Span::call_site());
    syn::parse_quote!(::#ident)
}
