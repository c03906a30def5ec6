//! The trait as written: its methods, what kind of call each is, its arguments and its result.
//! Every rule of a service trait is checked here, and a misuse is an error spanning the item
//! that breaks it.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, Pat, Path, PathArguments,
    ReturnType, TraitItem, TraitItemFn, Type, Visibility,
};

/// `#[service(crate = path, name = "...")]`.
pub(crate) struct Args {
    pub(crate) krate: Option<Path>,
    pub(crate) name: Option<String>,
}

pub(crate) fn parse_args(attr: TokenStream) -> syn::Result<Args> {
    let mut args = Args {
        krate: None,
        name: None,
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            args.krate = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("name") {
            let s: syn::LitStr = meta.value()?.parse()?;
            args.name = Some(s.value());
            Ok(())
        } else {
            Err(meta.error("#[service] takes `crate = path` and `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(args)
}

/// The methods every generated client has: a service method cannot take their names.
const RESERVED: [&str; 7] = [
    "new",
    "with_options",
    "with_timeout",
    "with_metadata",
    "options",
    "caller",
    "into_caller",
];

/// Who streams.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

/// One argument that travels in the request.
pub(crate) struct Arg {
    pub(crate) name: Ident,
    pub(crate) ty: Type,
}

/// A stream handle argument: its name and item type.
pub(crate) struct StreamArg {
    pub(crate) name: Ident,
    pub(crate) item: Type,
    /// The codec named in the handle's type, if any (`ServerStreamSender<T, C>`).
    pub(crate) codec: Option<Type>,
}

pub(crate) struct Method {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) name: Ident,
    pub(crate) kind: Kind,
    /// Whether the method takes the call's context (its first argument after `&self`).
    pub(crate) context: Option<(Ident, Type)>,
    pub(crate) args: Vec<Arg>,
    /// `RequestStream<Item>`: the client's items.
    pub(crate) incoming: Option<StreamArg>,
    /// `ServerStreamSender<Item>`: the server's items.
    pub(crate) outgoing: Option<StreamArg>,
    /// The result as written (`()` when none).
    pub(crate) output: Type,
    /// What travels back: the output for a unary call; `T` of `Result<T, RpcError>` for a
    /// client stream; nothing for the kinds that end with a stream.
    pub(crate) response: Option<Type>,
}

pub(crate) struct Service {
    pub(crate) item: ItemTrait,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    /// The service's name on the wire.
    pub(crate) wire_name: String,
    pub(crate) methods: Vec<Method>,
}

/// An error spanning all of `tokens` (its first to its last token, on stable Rust too).
fn err<T>(tokens: impl ToTokens, msg: &str) -> syn::Result<T> {
    Err(Error::new_spanned(tokens, msg))
}

/// Collects every misuse, so the user sees them all at once.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

pub(crate) fn parse_service(item: ItemTrait, name: Option<String>) -> syn::Result<Service> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return err(
            &item.generics,
            "a service trait cannot be generic: its methods' types are fixed on the wire",
        );
    }
    if let Some(unsafety) = &item.unsafety {
        return err(unsafety, "a service trait cannot be `unsafe`");
    }
    let mut errors = Errors::default();
    let mut methods = Vec::new();
    for it in &item.items {
        match it {
            TraitItem::Fn(f) => match parse_method(f) {
                Ok(m) => methods.push(m),
                Err(e) => errors.push(e),
            },
            other => errors.push(Error::new_spanned(
                other,
                "a service trait holds only methods (`async fn name(&self, ...) -> T;`)",
            )),
        }
    }
    if let Some(e) = errors.0 {
        return Err(e);
    }
    let ident = item.ident.clone();
    Ok(Service {
        vis: item.vis.clone(),
        wire_name: name.unwrap_or_else(|| ident.to_string()),
        ident,
        item,
        methods,
    })
}

/// The last segment of a type's path and its generic arguments, if it is a path.
fn last_segment(ty: &Type) -> Option<(&Ident, &PathArguments)> {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().map(|s| (&s.ident, &s.arguments))
        }
        _ => None,
    }
}

fn type_args(args: &PathArguments) -> Vec<&Type> {
    match args {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `ServerStreamSender<Item[, C]>` or `RequestStream<Item[, C]>`: (is it the sender, item, codec).
fn stream_handle(ty: &Type) -> Option<(bool, Type, Option<Type>)> {
    let (ident, args) = last_segment(ty)?;
    let sender = if ident == "ServerStreamSender" {
        true
    } else if ident == "RequestStream" {
        false
    } else {
        return None;
    };
    let args = type_args(args);
    let item = (*args.first()?).clone();
    Some((sender, item, args.get(1).map(|c| (*c).clone())))
}

/// `&CallContext` (any path ending in `CallContext`).
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => {
            matches!(last_segment(&r.elem), Some((i, _)) if i == "CallContext")
        }
        _ => false,
    }
}

/// Whether `ty` contains `impl Trait` anywhere.
fn has_impl_trait(ty: &Type) -> Option<syn::TypeImplTrait> {
    struct Find(Option<syn::TypeImplTrait>);
    impl<'a> syn::visit::Visit<'a> for Find {
        fn visit_type_impl_trait(&mut self, t: &'a syn::TypeImplTrait) {
            self.0.get_or_insert_with(|| t.clone());
        }
    }
    let mut f = Find(None);
    syn::visit::visit_type(&mut f, ty);
    f.0
}

fn parse_method(f: &TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if let Some(body) = &f.default {
        return Err(Error::new(
            body.brace_token.span.join(),
            "a service method has no default body: implement it in the `impl`",
        ));
    }
    if sig.asyncness.is_none() {
        let (fn_token, ident) = (&sig.fn_token, &sig.ident);
        return err(
            quote::quote!(#fn_token #ident),
            "a service method is an `async fn` (on a blocking server it runs to completion on \
             a handler thread)",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return err(
            &sig.generics,
            "a service method cannot be generic: its types are fixed on the wire",
        );
    }
    if RESERVED.iter().any(|r| sig.ident == r) {
        return err(
            &sig.ident,
            "this name is a method of the generated clients (`new`, `with_options`, \
             `with_timeout`, `with_metadata`, `options`, `caller`, `into_caller`): rename the \
             method",
        );
    }
    if let Some(c) = &sig.constness {
        return err(c, "a service method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        return err(u, "a service method cannot be `unsafe`");
    }
    if let Some(v) = &sig.variadic {
        return err(v, "a service method cannot be variadic");
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {
            if r.colon_token.is_some() {
                return err(r, "a service method takes `&self`, written so");
            }
        }
        Some(FnArg::Receiver(r)) => {
            return err(
                r,
                "a service method takes `&self` (the server calls it for many calls at once: \
                 keep mutable state behind a lock)",
            );
        }
        _ => {
            return err(
                &sig.ident,
                "a service method takes `&self` as its first argument",
            );
        }
    }
    let mut context = None;
    let mut args = Vec::new();
    let mut incoming: Option<StreamArg> = None;
    let mut outgoing: Option<StreamArg> = None;
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pt) = input else {
            return err(input, "`self` comes first");
        };
        let name = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                return err(
                    other,
                    "a service method's argument is a plain name (`a: i64`), not a pattern",
                );
            }
        };
        let ty = &*pt.ty;
        if let Some(t) = has_impl_trait(ty) {
            return Err(Error::new_spanned(
                t,
                "a service method's argument has a concrete type (`impl Trait` cannot travel)",
            ));
        }
        if is_context(ty) {
            if i != 0 {
                return err(
                    ty,
                    "the call's context (`&CallContext`) is the first argument after `&self`",
                );
            }
            context = Some((name, ty.clone()));
            continue;
        }
        if outgoing.is_some() {
            return err(pt, "the `ServerStreamSender` is the method's last argument");
        }
        if let Some((sender, item, codec)) = stream_handle(ty) {
            let arg = StreamArg { name, item, codec };
            if sender {
                outgoing = Some(arg);
            } else if incoming.is_some() {
                return err(ty, "a method has one `RequestStream`");
            } else {
                incoming = Some(arg);
            }
            continue;
        }
        if let Type::Reference(r) = ty {
            return err(
                r,
                "a service method takes its arguments by value (they are decoded for each call)",
            );
        }
        if incoming.is_some() {
            return err(
                pt,
                "a method with a `RequestStream` takes no other arguments: send them as items",
            );
        }
        args.push(Arg {
            name,
            ty: ty.clone(),
        });
    }
    let kind = match (&incoming, &outgoing) {
        (None, None) => Kind::Unary,
        (None, Some(_)) => Kind::ServerStream,
        (Some(_), None) => Kind::ClientStream,
        (Some(_), Some(_)) => Kind::Bidi,
    };
    if matches!(kind, Kind::ClientStream | Kind::Bidi) && !args.is_empty() {
        return err(
            &args[0].name,
            "a method with a `RequestStream` takes no other arguments: send them as items",
        );
    }
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    if let Some(t) = has_impl_trait(&output) {
        return Err(Error::new_spanned(
            t,
            "a service method's result has a concrete type (`impl Trait` cannot travel)",
        ));
    }
    let response = match kind {
        Kind::Unary => Some(output.clone()),
        Kind::ClientStream => Some(result_ok(&output, &sig.output)?),
        Kind::ServerStream | Kind::Bidi => {
            let ok = result_ok(&output, &sig.output)?;
            if ok.to_token_stream().to_string() != "()" {
                return err(
                    &sig.output,
                    "a method that streams its results returns `Result<(), RpcError>`",
                );
            }
            None
        }
    };
    Ok(Method {
        attrs: f.attrs.clone(),
        name: sig.ident.clone(),
        kind,
        context,
        args,
        incoming,
        outgoing,
        output,
        response,
    })
}

/// `T` of a streaming method's `Result<T, RpcError>`.
fn result_ok(output: &Type, span: &ReturnType) -> syn::Result<Type> {
    if let Some((ident, args)) = last_segment(output)
        && ident == "Result"
        && let [ok, _] = type_args(args)[..]
    {
        return Ok(ok.clone());
    }
    err(
        span,
        "a streaming method returns `Result<T, RpcError>` (T: the client stream's response, or \
         `()` when the server streams)",
    )
}
