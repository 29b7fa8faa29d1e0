//! `#[service]`: one trait declares an RPC service, and from it come its typed client and the
//! router that serves it. Use it through the facade, as `#[rpc_stack::service]`; the generated
//! code names `::rpc_stack`.
//!
//! ```ignore
//! #[rpc_stack::service]
//! pub trait Greeter {
//!     async fn sayhi(&self, ctx: Context, name: String) -> String;
//!     #[rpc(name = "get_data")]
//!     async fn data(&self) -> (String, u32);
//!     #[rpc(id = 2)]
//!     async fn add_2_words(&self, a: u32, b: u32) -> u32;
//!     #[rpc(notification)]
//!     async fn log(&self, line: String);
//! }
//! ```
//!
//! gives the trait with each `async fn` as a method returning a `Send` future, a provided
//! `into_router(self) -> Router`, and `GreeterClient<S>`, whose methods take the same parameters
//! (without `&self` and a leading `Context`) and return `Result<T, rpc_stack::Error>`.

use std::collections::HashSet;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitInt, LitStr, Pat, PathArguments,
    ReturnType, Token, TraitItem, TraitItemFn, Type,
};

/// Declares an RPC service; see the crate's documentation and `rpc_stack::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = syn::parse_macro_input!(attr as ServiceOptions);
    let item = syn::parse_macro_input!(item as ItemTrait);
    match expand(options, item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `#[service(namespace = "...")]`.
#[derive(Default)]
struct ServiceOptions {
    namespace: Option<String>,
}

impl Parse for ServiceOptions {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = ServiceOptions::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            match key.to_string().as_str() {
                "namespace" => {
                    input.parse::<Token![=]>()?;
                    options.namespace = Some(input.parse::<LitStr>()?.value());
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown service option `{other}`: expected `namespace = \"...\"`"),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(options)
    }
}

/// One RPC of the trait.
struct Rpc {
    method: Ident,
    /// The wire name.
    name: String,
    command: Option<u16>,
    notification: bool,
    takes_context: bool,
    params: Vec<(Ident, Type)>,
    /// What the handler returns, and what a call gives on success.
    output: Type,
    success: Type,
    attrs: Vec<Attribute>,
    span: Span,
}

fn expand(options: ServiceOptions, mut item: ItemTrait) -> syn::Result<TokenStream2> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "a service trait takes no generic parameters",
        ));
    }
    let mut rpcs = Vec::new();
    let mut names = HashSet::new();
    let mut commands = HashSet::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            return Err(syn::Error::new(
                trait_item.span(),
                "a service trait holds only `async fn` methods",
            ));
        };
        let rpc = parse_rpc(f, options.namespace.as_deref())?;
        if !names.insert(rpc.name.clone()) {
            return Err(syn::Error::new(
                rpc.span,
                format!("two methods of the service are named `{}`", rpc.name),
            ));
        }
        if let Some(id) = rpc.command {
            if !commands.insert(id) {
                return Err(syn::Error::new(
                    rpc.span,
                    format!("two methods of the service have command id {id}"),
                ));
            }
        }
        rpcs.push(rpc);
    }

    let vis = &item.vis;
    let trait_name = &item.ident;
    let trait_attrs = &item.attrs;
    let supertraits = &item.supertraits;
    let client_name = format_ident!("{}Client", trait_name);
    let methods = rpcs.iter().map(trait_method);
    let routes = rpcs.iter().map(|r| route(trait_name, r));
    let calls = rpcs.iter().map(client_method);
    let plus = if supertraits.is_empty() {
        quote!()
    } else {
        quote!(+)
    };
    let client_doc = format!(
        "A typed client of [`{trait_name}`]: one method per RPC, over any `rpc_stack::Client`."
    );
    Ok(quote! {
        #(#trait_attrs)*
        #vis trait #trait_name: #supertraits #plus ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*

            /// A router serving every method of the service from `self` (cloned for each call).
            /// Routers of several services merge with `Router::merge`.
            fn into_router(self) -> ::rpc_stack::Router
            where
                Self: ::core::clone::Clone + ::core::marker::Sized,
            {
                let router = ::rpc_stack::Router::new();
                #(let router = #routes;)*
                router
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        #vis struct #client_name<S> {
            client: ::rpc_stack::Client<S>,
        }

        impl<S> #client_name<S> {
            /// Calls the service through `client` (and the tower layers it was built with).
            #vis fn new(client: ::rpc_stack::Client<S>) -> Self {
                Self { client }
            }

            /// The client underneath.
            #vis fn into_inner(self) -> ::rpc_stack::Client<S> {
                self.client
            }
        }

        impl<S> #client_name<S>
        where
            S: ::rpc_stack::Service<::rpc_stack::Request, Response = ::rpc_stack::Payload>
                + ::core::clone::Clone
                + ::core::marker::Send
                + 'static,
            S::Error: ::core::convert::Into<::rpc_stack::BoxError>,
            S::Future: ::core::marker::Send,
        {
            #(#calls)*
        }
    })
}

fn parse_rpc(f: &mut TraitItemFn, namespace: Option<&str>) -> syn::Result<Rpc> {
    let sig = &f.sig;
    let span = sig.ident.span();
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            "an RPC method is an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "an RPC method takes no generic parameters",
        ));
    }
    if f.default.is_some() {
        return Err(syn::Error::new(
            f.default.span(),
            "an RPC method has no body in the service trait: implement it on a type",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(other) => {
            return Err(syn::Error::new(
                other.span(),
                "an RPC method takes `&self` first",
            ))
        }
        None => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                "an RPC method takes `&self` first",
            ))
        }
    }
    let mut takes_context = false;
    let mut params = Vec::new();
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pt) = input else {
            unreachable!("only the first input can be a receiver")
        };
        if i == 0 && is_context(&pt.ty) {
            takes_context = true;
            continue;
        }
        let Pat::Ident(name) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "an RPC parameter is a plain name (it names the parameter for JSON-RPC)",
            ));
        };
        params.push((name.ident.clone(), (*pt.ty).clone()));
    }
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let success = result_ok(&output).unwrap_or_else(|| output.clone());

    let mut name = sig.ident.to_string();
    let mut command = None;
    let mut notification = false;
    let mut kept = Vec::new();
    for attr in f.attrs.drain(..) {
        if !attr.path().is_ident("rpc") {
            kept.push(attr);
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = meta.value()?.parse::<LitStr>()?.value();
                Ok(())
            } else if meta.path.is_ident("id") {
                command = Some(meta.value()?.parse::<LitInt>()?.base10_parse::<u16>()?);
                Ok(())
            } else if meta.path.is_ident("notification") {
                notification = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown rpc option: expected `name = \"...\"`, `id = N` or `notification`",
                ))
            }
        })?;
    }
    f.attrs = kept.clone();
    if notification && !is_unit(&success) {
        return Err(syn::Error::new(
            sig.output.span(),
            "a notification returns nothing: no answer is sent",
        ));
    }
    if let Some(ns) = namespace {
        name = format!("{ns}.{name}");
    }
    Ok(Rpc {
        method: sig.ident.clone(),
        name,
        command,
        notification,
        takes_context,
        params,
        output,
        success,
        attrs: kept,
        span,
    })
}

/// Whether `ty` names the call's `Context` (by its last path segment).
fn is_context(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Whether `ty` is `Vec<u8>` or `[u8; N]`: bytes, which travel as msgpack bin.
fn is_bytes(ty: &Type) -> bool {
    let is_u8 = |t: &Type| matches!(t, Type::Path(p) if p.path.is_ident("u8"));
    match ty {
        Type::Array(a) => is_u8(&a.elem),
        Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            s.ident == "Vec"
                && matches!(&s.arguments, PathArguments::AngleBracketed(args)
                    if args.args.len() == 1
                        && matches!(args.args.first(), Some(GenericArgument::Type(t)) if is_u8(t)))
        }),
        _ => false,
    }
}

/// A parameter's type as the router decodes it, and the expression that gives the handler its
/// value: bytes through `Bin`.
fn decoded(name: &Ident, ty: &Type) -> (TokenStream2, TokenStream2) {
    if is_bytes(ty) {
        (quote!(::rpc_stack::__private::Bin<#ty>), quote!(#name.0))
    } else {
        (quote!(#ty), quote!(#name))
    }
}

/// `T` of a `Result<T, E>`.
fn result_ok(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) if args.args.len() == 2 => Some(t.clone()),
        _ => None,
    }
}

/// The trait's method: its `async fn` as a method returning a `Send` future.
fn trait_method(rpc: &Rpc) -> TokenStream2 {
    let Rpc {
        method,
        attrs,
        output,
        params,
        takes_context,
        span,
        ..
    } = rpc;
    let context = takes_context.then(|| quote!(ctx: ::rpc_stack::Context,));
    let params = params.iter().map(|(n, t)| quote!(#n: #t));
    quote_spanned! {*span=>
        #(#attrs)*
        fn #method(&self, #context #(#params),*)
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
    }
}

/// The router with `rpc`'s route added (an expression over `router` and `self`).
fn route(trait_name: &Ident, rpc: &Rpc) -> TokenStream2 {
    let Rpc {
        method,
        name,
        command,
        takes_context,
        params,
        ..
    } = rpc;
    let names = params.iter().map(|(n, _)| n.to_string());
    let (args, passed): (Vec<_>, Vec<_>) = params
        .iter()
        .map(|(n, t)| {
            let (ty, value) = decoded(n, t);
            (quote!(#n: #ty), value)
        })
        .unzip();
    // A result of bytes is answered as bin.
    let reply = if is_bytes(&rpc.success) && result_ok(&rpc.output).is_some() {
        quote!(out.map(::rpc_stack::__private::Bin))
    } else if is_bytes(&rpc.success) {
        quote!(::rpc_stack::__private::Bin(out))
    } else {
        quote!(out)
    };
    let (context_param, context_arg) = if *takes_context {
        (quote!(ctx: ::rpc_stack::Context,), quote!(ctx,))
    } else {
        (quote!(), quote!())
    };
    let params_call = (!params.is_empty()).then(|| quote!(.params([#(#names),*])));
    let command_call = command.map(|id| quote!(.command(#id)));
    quote! {{
        let service = ::core::clone::Clone::clone(&self);
        router.add_route(
            ::rpc_stack::Route::new(move |#context_param #(#args),*| {
                let service = ::core::clone::Clone::clone(&service);
                async move {
                    let out = #trait_name::#method(&service, #context_arg #(#passed),*).await;
                    #reply
                }
            })
            .name(#name)
            #params_call
            #command_call
        )
    }}
}

/// The client's method for `rpc`.
fn client_method(rpc: &Rpc) -> TokenStream2 {
    let Rpc {
        method,
        name,
        command,
        notification,
        params,
        success,
        attrs,
        ..
    } = rpc;
    let docs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
    let default_doc = docs.is_empty().then(|| {
        let doc = if *notification {
            format!("Sends the notification `{name}`.")
        } else {
            format!("Calls `{name}`.")
        };
        quote!(#[doc = #doc])
    });
    let args = params.iter().map(|(n, t)| quote!(#n: #t));
    let passed: Vec<_> = params
        .iter()
        .map(|(n, t)| {
            if is_bytes(t) {
                quote!(::rpc_stack::__private::Bin(#n))
            } else {
                quote!(#n)
            }
        })
        .collect();
    let wire = match command {
        Some(id) => {
            quote!(::rpc_stack::__private::method(self.client.format(), #name, ::core::option::Option::Some(#id)))
        }
        None => {
            quote!(::rpc_stack::__private::method(self.client.format(), #name, ::core::option::Option::None))
        }
    };
    let body = if *notification {
        quote!(self.client.notify(#wire, (#(#passed,)*)).await)
    } else if is_bytes(success) {
        quote!(self
            .client
            .call::<::rpc_stack::__private::Bin<#success>>(#wire, (#(#passed,)*))
            .await
            .map(|bin| bin.0))
    } else {
        quote!(self.client.call::<#success>(#wire, (#(#passed,)*)).await)
    };
    let ret = if *notification {
        quote!(())
    } else {
        quote!(#success)
    };
    if !*notification && !is_bytes(success) {
        // The call's own future, not one around it: a generated call costs what `Client::call`
        // does.
        return quote! {
            #(#docs)*
            #default_doc
            pub fn #method(&self, #(#args),*)
                -> impl ::core::future::Future<Output = ::core::result::Result<#ret, ::rpc_stack::Error>> + '_
            {
                self.client.call::<#success>(#wire, (#(#passed,)*))
            }
        };
    }
    quote! {
        #(#docs)*
        #default_doc
        pub async fn #method(&self, #(#args),*) -> ::core::result::Result<#ret, ::rpc_stack::Error> {
            #body
        }
    }
}
