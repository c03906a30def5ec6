//! # xrpc-macros — `#[service]`: a trait as an RPC service
//!
//! Used through a facade: `#[xrpc::service]`, `#[xrpc_tokio::service]`,
//! `#[xrpc_smol::service]` or `#[xrpc_blocking::service]` (each re-exports [`macro@service`]).
//! The attribute's documentation, with the rules of a service trait and what it generates, is
//! on [`macro@service`]; the wire form of a service's calls is in `docs/PROTOCOL.md`
//! ("Services").
//!
//! | module | owns |
//! |---|---|
//! | `parse` | the trait as written: its methods, their kind, arguments and result, and every misuse as an error at its item |
//! | `expand` | the generated trait, clients and server adapter |
//! | `krate` | the path of the facade the generated code names |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod expand;
mod krate;
mod parse;

use proc_macro::TokenStream;

/// Defines an RPC service from a trait: the trait itself (its `async fn`s made `Send`), a typed
/// async client `<Trait>Client`, a blocking client `<Trait>BlockingClient` and a server adapter
/// `<Trait>Server`.
///
/// ```ignore
/// #[xrpc::service]
/// pub trait Calculator {
///     /// Unary: the arguments travel as one value ((a, b) here), the result as written.
///     async fn add(&self, a: i64, b: i64) -> i64;
///     /// A typed application error: the client gets `Result<Result<i64, DivError>, RpcError>`.
///     async fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
///     /// The call's context (deadline, metadata, cancellation): an optional first argument.
///     async fn slow(&self, ctx: &CallContext, ms: u64) -> bool;
///     /// A server stream: a `ServerStreamSender<Item>` last; ends with the handler's result.
///     async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
///     /// A client stream: a `RequestStream<Item>` alone; returns the single response.
///     async fn sum(&self, items: RequestStream<i64>) -> Result<i64, RpcError>;
///     /// Bidirectional: both.
///     async fn echo(&self, items: RequestStream<String>, out: ServerStreamSender<String>)
///         -> Result<(), RpcError>;
/// }
///
/// server.add_service(CalculatorServer::new(MyCalculator));
/// let calc = CalculatorClient::new(rpc_client);
/// assert_eq!(calc.add(1, 2).await?, 3);
/// let calc = calc.with_timeout(Duration::from_millis(50)); // per-call options
/// ```
///
/// Each method is called on the wire as `"<Trait>.<method>"` (`"Calculator.add"`), so a client
/// of the string API reaches it too, and sends its signature (argument and result types as
/// written, and their fingerprint): a server built from another version of the trait answers
/// `RpcError::TypeMismatch` naming both.
///
/// Options: `#[service(crate = path)]` names the facade when it is not a dependency under its
/// own name (`xrpc`, `xrpc-tokio`, `xrpc-smol`, `xrpc-blocking`); `#[service(name = "calc.v1")]`
/// replaces the trait's name in the wire method names.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand_service(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // The trait as written stays, so that the error is the only one.
        Err(e) => {
            let mut tokens = e.to_compile_error();
            tokens.extend(item);
            tokens.into()
        }
    }
}

fn expand_service(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let args = parse::parse_args(attr)?;
    let service = parse::parse_service(syn::parse2(item)?, args.name)?;
    let krate = match args.krate {
        Some(path) => path,
        None => krate::facade()?,
    };
    Ok(expand::expand(&service, &krate))
}
