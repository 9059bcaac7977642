//! The `#[rule]` attribute: turns one function into the exports of a rulegate rule.
//!
//! ```ignore
//! #[rule]                       // on-message only
//! #[rule(init = check_config)]  // plus a `fn() -> Result<()>` run once per instance
//! ```
//! The marked function takes a `Message` and returns `Result<Vec<Output>>`.

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, ItemFn, Token, parse_macro_input};

/// Arguments of `#[rule(...)]`.
struct RuleArgs {
    init: Option<Ident>,
}

impl Parse for RuleArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Ok(RuleArgs { init: None });
        }
        let key: Ident = input.parse()?;
        if key != "init" {
            return Err(syn::Error::new(
                key.span(),
                "unknown #[rule] argument: the only one is `init = function_name`",
            ));
        }
        input.parse::<Token![=]>()?;
        let init = input.parse()?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after `init = function_name`"));
        }
        Ok(RuleArgs { init: Some(init) })
    }
}

/// Exports the function as the rule's `on-message` handler.
#[proc_macro_attribute]
pub fn rule(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as RuleArgs);
    let handler = parse_macro_input!(item as ItemFn);
    let handler_name = &handler.sig.ident;
    if handler.sig.inputs.len() != 1 {
        return syn::Error::new_spanned(
            &handler.sig,
            "a #[rule] function takes exactly one argument: `msg: Message`",
        )
        .to_compile_error()
        .into();
    }
    let init_body = match &args.init {
        Some(init) => quote! { #init() },
        None => quote! { Ok(()) },
    };
    quote! {
        #handler

        #[doc(hidden)]
        struct __RulegateRule;

        impl ::rulegate_sdk::bindings::Guest for __RulegateRule {
            fn init() -> ::core::result::Result<(), ::rulegate_sdk::RuleError> {
                #init_body
            }

            fn on_message(
                msg: ::rulegate_sdk::Message,
            ) -> ::core::result::Result<::std::vec::Vec<::rulegate_sdk::Output>, ::rulegate_sdk::RuleError> {
                #handler_name(msg)
            }
        }

        ::rulegate_sdk::bindings::__export_rule!(__RulegateRule);
    }
    .into()
}
