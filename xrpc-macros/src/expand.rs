//! The generated items: the trait (each `async fn` made a `Send` future), the async client, the
//! blocking client and the server adapter. What they call is `xrpc_async::service`, reached
//! through the facade's hidden `__private` module.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Path, ReturnType, TraitItem, Type};

use crate::parse::{Kind, Method, Service};

pub(crate) fn expand(service: &Service, krate: &Path) -> TokenStream {
    let xa = quote!(#krate::__private::xrpc_async);
    let svc = quote!(#xa::service);
    let the_trait = expand_trait(service);
    let checks = expand_checks(service, &svc);
    let client = expand_client(service, &svc);
    let blocking = expand_blocking_client(service, &svc);
    let server = expand_server(service, &svc);
    quote! {
        #the_trait
        #checks
        #client
        #blocking
        #server
    }
}

/// `tokens` with every span set to `at` (the method's name): a bound that the generated code
/// for a method does not meet is reported at that method, not at the attribute.
fn respan(tokens: TokenStream, at: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), at));
                group.set_span(at);
                return proc_macro2::TokenTree::Group(group);
            }
            t.set_span(at);
            t
        })
        .collect()
}

/// A type's text as a signature shows it: `Result<i64, DivError>`, `(i64, i64)`.
fn type_text(ty: &Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        while s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s
}

/// The request's type: `()`, the one argument's, or the tuple of them.
fn request_type(m: &Method) -> Type {
    let tys = m.args.iter().map(|a| &a.ty);
    match m.args.len() {
        1 => m.args[0].ty.clone(),
        _ => syn::parse_quote!((#(#tys),*)),
    }
}

/// The request's value on the client (owned arguments moved into it), which is also the
/// pattern that takes it apart on the server: the argument, or the tuple of the arguments.
fn request_value(m: &Method) -> TokenStream {
    let names = m.args.iter().map(|a| &a.name);
    match m.args.len() {
        1 => {
            let n = &m.args[0].name;
            quote!(#n)
        }
        _ => quote!((#(#names),*)),
    }
}

/// The signature text: `(i64, i64) -> i64`, `u32 -> stream u32`, `stream i64 -> i64`, ...
fn signature_text(m: &Method) -> String {
    let req = type_text(&request_type(m));
    let item = |s: &Option<crate::parse::StreamArg>| {
        s.as_ref()
            .map(|s| format!("stream {}", type_text(&s.item)))
            .unwrap_or_default()
    };
    match m.kind {
        Kind::Unary => format!("{req} -> {}", type_text(&m.output)),
        Kind::ServerStream => format!("{req} -> {}", item(&m.outgoing)),
        Kind::ClientStream => format!(
            "{} -> {}",
            item(&m.incoming),
            m.response.as_ref().map(type_text).unwrap_or_default()
        ),
        Kind::Bidi => format!("{} -> {}", item(&m.incoming), item(&m.outgoing)),
    }
}

fn kind_tokens(kind: Kind, svc: &TokenStream) -> TokenStream {
    match kind {
        Kind::Unary => quote!(#svc::CallKind::Unary),
        Kind::ServerStream => quote!(#svc::CallKind::ServerStreaming),
        Kind::ClientStream => quote!(#svc::CallKind::ClientStreaming),
        Kind::Bidi => quote!(#svc::CallKind::Bidirectional),
    }
}

/// `&'static Method` of `m`: its wire name, kind and signature.
fn method_const(service: &Service, m: &Method, svc: &TokenStream) -> TokenStream {
    let wire = format!("{}.{}", service.wire_name, m.name);
    let kind = kind_tokens(m.kind, svc);
    let text = signature_text(m);
    let context = m.context.is_some();
    quote!(const { &#svc::Method::new(#wire, #kind, #text, #context) })
}

fn expand_trait(service: &Service) -> TokenStream {
    let mut item = service.item.clone();
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    for it in &mut item.items {
        if let TraitItem::Fn(f) = it {
            let output: Type = match &f.sig.output {
                ReturnType::Default => syn::parse_quote!(()),
                ReturnType::Type(_, t) => (**t).clone(),
            };
            let span = f.sig.asyncness.span();
            f.sig.asyncness = None;
            f.sig.output = syn::parse_quote_spanned! {span=>
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
            };
        }
    }
    item.into_token_stream()
}

/// Each argument, item and result type must travel: a bound error at the type that does not.
fn expand_checks(service: &Service, svc: &TokenStream) -> TokenStream {
    let mut checks = Vec::new();
    for m in &service.methods {
        let tys = m
            .args
            .iter()
            .map(|a| &a.ty)
            .chain(m.incoming.iter().map(|s| &s.item))
            .chain(m.outgoing.iter().map(|s| &s.item))
            .chain(m.response.iter());
        for ty in tys {
            checks.push(quote_spanned! {ty.span()=> #svc::assert_wire::<#ty>();});
        }
    }
    let name = format_ident!("__xrpc_check_{}", service.ident);
    quote! {
        #[allow(dead_code, non_snake_case)]
        #[doc(hidden)]
        fn #name() {
            #(#checks)*
        }
    }
}

fn method_docs(m: &Method) -> TokenStream {
    let docs = m.attrs.iter().filter(|a| a.path().is_ident("doc"));
    quote!(#(#docs)*)
}

fn client_args(m: &Method) -> TokenStream {
    let args = m.args.iter().map(|a| {
        let (n, t) = (&a.name, &a.ty);
        quote!(#n: #t)
    });
    quote!(#(#args),*)
}

fn expand_client(service: &Service, svc: &TokenStream) -> TokenStream {
    let vis = &service.vis;
    let client = format_ident!("{}Client", service.ident);
    let trait_name = &service.ident;
    let doc = format!(
        "The client of [`{trait_name}`]: one async method per method of the trait, over any \
         [`Caller`]({0}) (an `RpcClient` of any runtime, a `LoadBalancedClient`). Generated \
         by `#[service]`.",
        "xrpc_async::service::Caller"
    );
    let methods = service.methods.iter().map(|m| {
        let name = &m.name;
        let docs = method_docs(m);
        let method = method_const(service, m, svc);
        let args = client_args(m);
        let req = request_value(m);
        // The call is reported at the method when the generated code cannot meet its bounds.
        match m.kind {
            Kind::Unary => {
                let out = &m.output;
                let body = respan(quote!(#svc::Caller::call(&self.caller, #method, &#req, self.options.clone()).await), m.name.span());
                quote! {
                    #docs
                    pub async fn #name(&self, #args) -> ::core::result::Result<#out, #svc::RpcError> {
                        #body
                    }
                }
            }
            Kind::ServerStream => {
                let item = &m.outgoing.as_ref().expect("server stream").item;
                let body = respan(quote!(#svc::StreamCaller::call_server_stream(&self.caller, #method, &#req, self.options.clone()).await), m.name.span());
                quote! {
                    #docs
                    pub async fn #name(&self, #args) -> ::core::result::Result<<T as #svc::StreamCaller>::Receiver<#item>, #svc::RpcError>
                    where T: #svc::StreamCaller {
                        #body
                    }
                }
            }
            Kind::ClientStream => {
                let item = &m.incoming.as_ref().expect("client stream").item;
                let resp = m.response.as_ref().expect("client stream response");
                let body = respan(quote!(#svc::StreamCaller::call_client_stream(&self.caller, #method, self.options.clone()).await), m.name.span());
                quote! {
                    #docs
                    pub async fn #name(&self) -> ::core::result::Result<#svc::ClientStreamEnds<T, #item, #resp>, #svc::RpcError>
                    where T: #svc::StreamCaller {
                        #body
                    }
                }
            }
            Kind::Bidi => {
                let inc = &m.incoming.as_ref().expect("bidi").item;
                let out = &m.outgoing.as_ref().expect("bidi").item;
                let body = respan(quote!(#svc::StreamCaller::call_bidi(&self.caller, #method, self.options.clone()).await), m.name.span());
                quote! {
                    #docs
                    pub async fn #name(&self) -> ::core::result::Result<#svc::BidiEnds<T, #inc, #out>, #svc::RpcError>
                    where T: #svc::StreamCaller {
                        #body
                    }
                }
            }
        }
    });
    let methods = quote!(#(#methods)*);
    client_struct(&doc, vis, &client, svc, &quote!(#svc::Caller), &methods)
}

/// A client (async or blocking): its struct, construction and per-call options, and its
/// `methods` for a caller of trait `caller`.
fn client_struct(
    doc: &str,
    vis: &syn::Visibility,
    client: &Ident,
    svc: &TokenStream,
    caller: &TokenStream,
    methods: &TokenStream,
) -> TokenStream {
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #client<T> {
            caller: T,
            options: #svc::CallOptions,
        }
        impl<T: #caller> #client<T> {
            #methods
        }
        impl<T> #client<T> {
            /// A client calling through `caller`, with default options.
            pub fn new(caller: T) -> Self {
                Self { caller, options: ::core::default::Default::default() }
            }

            /// The same client with `options` for its calls (deadline, metadata); the kind,
            /// codec and signature of each call are the method's own.
            pub fn with_options(&self, options: #svc::CallOptions) -> Self
            where
                T: ::core::clone::Clone,
            {
                Self { caller: self.caller.clone(), options }
            }

            /// The same client with a timeout for its calls.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self
            where
                T: ::core::clone::Clone,
            {
                self.with_options(self.options.clone().with_timeout(timeout))
            }

            /// The same client with `metadata` on its calls (each handler reads it from its
            /// `CallContext`).
            pub fn with_metadata(&self, metadata: #svc::Metadata) -> Self
            where
                T: ::core::clone::Clone,
            {
                self.with_options(self.options.clone().with_metadata(metadata))
            }

            /// The options of its calls.
            pub fn options(&self) -> &#svc::CallOptions {
                &self.options
            }

            /// What it calls through.
            pub fn caller(&self) -> &T {
                &self.caller
            }

            /// What it calls through, given back.
            pub fn into_caller(self) -> T {
                self.caller
            }
        }
    }
}

fn expand_blocking_client(service: &Service, svc: &TokenStream) -> TokenStream {
    let vis = &service.vis;
    let client = format_ident!("{}BlockingClient", service.ident);
    let trait_name = &service.ident;
    let doc = format!(
        "The blocking client of [`{trait_name}`]: one synchronous method per method of the \
         trait, over any `BlockingCaller` (`xrpc_blocking::RpcClient`). Generated by \
         `#[service]`."
    );
    let methods = service.methods.iter().map(|m| {
        let name = &m.name;
        let docs = method_docs(m);
        let method = method_const(service, m, svc);
        let args = client_args(m);
        let req = request_value(m);
        let bc = quote!(#svc::BlockingCaller);
        match m.kind {
            Kind::Unary => {
                let out = &m.output;
                let body = respan(quote!(#bc::call(&self.caller, #method, &#req, self.options.clone())), m.name.span());
                quote! {
                    #docs
                    pub fn #name(&self, #args) -> ::core::result::Result<#out, #svc::RpcError> {
                        #body
                    }
                }
            }
            Kind::ServerStream => {
                let item = &m.outgoing.as_ref().expect("server stream").item;
                let body = respan(quote!(#bc::call_server_stream(&self.caller, #method, &#req, self.options.clone())), m.name.span());
                quote! {
                    #docs
                    pub fn #name(&self, #args) -> ::core::result::Result<<T as #bc>::Receiver<#item>, #svc::RpcError> {
                        #body
                    }
                }
            }
            Kind::ClientStream => {
                let item = &m.incoming.as_ref().expect("client stream").item;
                let resp = m.response.as_ref().expect("client stream response");
                let body = respan(quote!(#bc::call_client_stream(&self.caller, #method, self.options.clone())), m.name.span());
                quote! {
                    #docs
                    pub fn #name(&self) -> ::core::result::Result<#svc::BlockingClientStreamEnds<T, #item, #resp>, #svc::RpcError> {
                        #body
                    }
                }
            }
            Kind::Bidi => {
                let inc = &m.incoming.as_ref().expect("bidi").item;
                let out = &m.outgoing.as_ref().expect("bidi").item;
                let body = respan(quote!(#bc::call_bidi(&self.caller, #method, self.options.clone())), m.name.span());
                quote! {
                    #docs
                    pub fn #name(&self) -> ::core::result::Result<#svc::BlockingBidiEnds<T, #inc, #out>, #svc::RpcError> {
                        #body
                    }
                }
            }
        }
    });
    let methods = quote!(#(#methods)*);
    client_struct(
        &doc,
        vis,
        &client,
        svc,
        &quote!(#svc::BlockingCaller),
        &methods,
    )
}

fn expand_server(service: &Service, svc: &TokenStream) -> TokenStream {
    let vis = &service.vis;
    let trait_name = &service.ident;
    let server = format_ident!("{}Server", service.ident);
    let doc = format!(
        "The server adapter of [`{trait_name}`]: `server.add_service({server}::new(my_impl))` \
         registers each method under `\"{}.<method>\"` with its signature, on an async server \
         of any runtime or on a blocking one. Generated by `#[service]`.",
        service.wire_name
    );
    // Stream handles name their codec: a service with streams is served with it.
    let codec = service
        .methods
        .iter()
        .flat_map(|m| m.incoming.iter().chain(m.outgoing.iter()))
        .next()
        .map(|s| {
            s.codec
                .as_ref()
                .map(|c| c.to_token_stream())
                .unwrap_or_else(|| quote!(#svc::BincodeCodec))
        });
    let codec_bound = codec.map(|c| quote!(<Codec = #c>));
    let registrations = service.methods.iter().map(|m| {
        let name = &m.name;
        let method = method_const(service, m, svc);
        let req_ty = request_type(m);
        let pat = request_value(m);
        let names = m.args.iter().map(|a| &a.name);
        let call_args = quote!(#(#names,)*);
        let (ctx_param, ctx_arg) = match &m.context {
            Some(_) => (quote!(ctx), quote!(&ctx,)),
            None => (quote!(_ctx), quote!()),
        };
        let span = Span::call_site();
        let tokens = match m.kind {
            Kind::Unary => quote_spanned! {span=>
                let svc = self.service.clone();
                #svc::Registry::unary(registry, #method, move |#ctx_param: #svc::CallContext, req: #req_ty| {
                    let svc = svc.clone();
                    async move {
                        let #pat = req;
                        ::core::result::Result::Ok(svc.#name(#ctx_arg #call_args).await)
                    }
                });
            },
            Kind::ServerStream => {
                let out = &m.outgoing.as_ref().expect("server stream").name;
                quote_spanned! {span=>
                    let svc = self.service.clone();
                    #svc::Registry::server_stream(registry, #method, move |#ctx_param: #svc::CallContext, req: #req_ty, #out| {
                        let svc = svc.clone();
                        async move {
                            let #pat = req;
                            svc.#name(#ctx_arg #call_args #out).await
                        }
                    });
                }
            }
            Kind::ClientStream => {
                let inc = &m.incoming.as_ref().expect("client stream").name;
                quote_spanned! {span=>
                    let svc = self.service.clone();
                    #svc::Registry::client_stream(registry, #method, move |#ctx_param: #svc::CallContext, #inc| {
                        let svc = svc.clone();
                        async move { svc.#name(#ctx_arg #inc).await }
                    });
                }
            }
            Kind::Bidi => {
                let inc = &m.incoming.as_ref().expect("bidi").name;
                let out = &m.outgoing.as_ref().expect("bidi").name;
                quote_spanned! {span=>
                    let svc = self.service.clone();
                    #svc::Registry::bidi(registry, #method, move |#ctx_param: #svc::CallContext, #inc, #out| {
                        let svc = svc.clone();
                        async move { svc.#name(#ctx_arg #inc, #out).await }
                    });
                }
            }
        };
        // Whatever the generated code cannot meet is reported at the method.
        respan(tokens, m.name.span())
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            service: ::std::sync::Arc<S>,
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { service: self.service.clone() }
            }
        }

        impl<S: #trait_name> #server<S> {
            /// Serves `service`.
            pub fn new(service: S) -> Self {
                Self { service: ::std::sync::Arc::new(service) }
            }

            /// Serves a service shared with other owners.
            pub fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { service }
            }
        }

        impl<S: #trait_name, Reg: #svc::Registry #codec_bound> #svc::Service<Reg> for #server<S> {
            fn register(self, registry: &Reg) {
                #({ #registrations })*
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_service;

    fn service() -> Service {
        let item = syn::parse_quote! {
            pub trait Calculator {
                async fn add(&self, a: i64, b: i64) -> i64;
                async fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
                async fn ping(&self, ctx: &CallContext);
                async fn get(&self, key: ::std::string::String) -> Option<Vec<u8>>;
                async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
                async fn sum(&self, items: RequestStream<i64>) -> Result<i64, RpcError>;
                async fn echo(&self, items: RequestStream<[u8; 4]>, out: ServerStreamSender<String>)
                    -> Result<(), RpcError>;
            }
        };
        parse_service(item, None).unwrap()
    }

    #[test]
    fn signature_texts_read_as_the_trait_writes_the_types() {
        let texts: Vec<String> = service().methods.iter().map(signature_text).collect();
        assert_eq!(
            texts,
            [
                "(i64, i64) -> i64",
                "(i64, i64) -> Result<i64, DivError>",
                "() -> ()",
                "::std::string::String -> Option<Vec<u8>>",
                "u32 -> stream u32",
                "stream i64 -> i64",
                "stream [u8; 4] -> stream String",
            ]
        );
    }

    #[test]
    fn the_expansion_is_valid_rust() {
        let tokens = expand(&service(), &syn::parse_quote!(::xrpc));
        let file: syn::File = syn::parse2(tokens).unwrap();
        let names: Vec<String> = file
            .items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Struct(s) => Some(s.ident.to_string()),
                syn::Item::Trait(t) => Some(t.ident.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "Calculator",
                "CalculatorClient",
                "CalculatorBlockingClient",
                "CalculatorServer"
            ]
        );
    }
}
