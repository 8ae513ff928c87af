//! `#[warden_sdk::plugin]`: the export glue for a warden plugin. Use it through
//! `warden-sdk`, which re-exports it as `warden_sdk::plugin`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ImplItem, ItemImpl};

/// The twelve hooks: the Rust function name and the `Hook` variant, in WIT order.
const HOOKS: [(&str, &str); 12] = [
    ("on_prompt", "OnPrompt"),
    ("on_request", "OnRequest"),
    ("on_approve", "OnApprove"),
    ("on_deny", "OnDeny"),
    ("on_escalate", "OnEscalate"),
    ("on_deescalate", "OnDeescalate"),
    ("after_prompt", "AfterPrompt"),
    ("after_request", "AfterRequest"),
    ("after_approve", "AfterApprove"),
    ("after_deny", "AfterDeny"),
    ("after_escalate", "AfterEscalate"),
    ("after_deescalate", "AfterDeescalate"),
];

/// Exports a warden plugin. Put it on the plugin's `impl Plugin for MyPlugin { ... }`
/// block: the block is kept as is, and the plugin exports exactly the hooks it
/// defines. See the `warden-sdk` crate documentation.
#[proc_macro_attribute]
pub fn plugin(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(attr.into(), item.into()).into()
}

fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let usage = "#[warden_sdk::plugin] goes on a plugin's `impl Plugin for MyPlugin { ... }` block";
    if !attr.is_empty() {
        let message = "#[warden_sdk::plugin] takes no arguments";
        return with_error(item, syn::Error::new(attr.span(), message));
    }
    let block: ItemImpl = match syn::parse2(item.clone()) {
        Ok(block) => block,
        Err(error) => return with_error(item, syn::Error::new(error.span(), usage)),
    };
    if block.trait_.is_none() {
        return with_error(item, syn::Error::new(block.self_ty.span(), usage));
    }
    if !block.generics.params.is_empty() {
        let message = "a warden plugin type can't be generic";
        return with_error(item, syn::Error::new(block.generics.span(), message));
    }

    let mut errors = TokenStream::new();
    let mut implemented = Vec::new();
    for impl_item in &block.items {
        if let ImplItem::Fn(function) = impl_item {
            let name = &function.sig.ident;
            match hook_variant(&name.to_string()) {
                Ok(variant) => implemented.push(format_ident!("{}", variant)),
                Err(message) => {
                    errors.extend(syn::Error::new(name.span(), message).into_compile_error())
                }
            }
        }
    }
    if !errors.is_empty() {
        return quote!(#block #errors);
    }

    let self_ty = &block.self_ty;
    let span = self_ty.span();
    let hooks = HOOKS.iter().map(|(name, _)| {
        let name = format_ident!("{}", name);
        quote_spanned! {span=>
            fn #name(
                event: ::warden_sdk::Event,
            ) -> ::core::result::Result<::warden_sdk::Decision, ::std::string::String> {
                ::warden_sdk::__private::run(
                    <__WardenPlugin as ::warden_sdk::Plugin>::#name,
                    event,
                )
            }
        }
    });
    quote! {
        #block

        const _: () = {
            type __WardenPlugin = #self_ty;

            impl ::warden_sdk::__private::Guest for __WardenPlugin {
                fn implemented() -> ::std::vec::Vec<::warden_sdk::Hook> {
                    ::std::vec![#(::warden_sdk::Hook::#implemented),*]
                }
                #(#hooks)*
            }

            // Marks the plugin type used, for targets without the exports.
            const _: () = ::warden_sdk::__private::plugin_type::<__WardenPlugin>();

            // Only wasm32 gets the exports: on other targets the symbol names (with `@`)
            // break the linker's version script, and nothing could call them anyway.
            #[cfg(target_arch = "wasm32")]
            ::warden_sdk::bindings::export!(__WardenPlugin with_types_in ::warden_sdk::bindings);
        };
    }
}

/// The `Hook` variant for the hook function `name`, or the error message for a
/// function that is not a hook.
fn hook_variant(name: &str) -> Result<&'static str, String> {
    HOOKS
        .iter()
        .find(|(hook, _)| *hook == name)
        .map(|(_, variant)| *variant)
        .ok_or_else(|| {
            let names: Vec<&str> = HOOKS.iter().map(|(hook, _)| *hook).collect();
            format!(
                "`{name}` is not a warden hook; the hooks are: {}",
                names.join(", ")
            )
        })
}

/// The item unchanged (so its own errors still show) plus `error`.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#item #error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_map_to_variants() {
        assert_eq!(hook_variant("on_prompt"), Ok("OnPrompt"));
        assert_eq!(hook_variant("on_request"), Ok("OnRequest"));
        assert_eq!(hook_variant("on_deescalate"), Ok("OnDeescalate"));
        assert_eq!(hook_variant("after_request"), Ok("AfterRequest"));
        assert_eq!(hook_variant("after_deescalate"), Ok("AfterDeescalate"));
        for (name, variant) in HOOKS {
            assert_eq!(hook_variant(name), Ok(variant));
        }
    }

    #[test]
    fn unknown_names_list_the_hooks() {
        let error = hook_variant("on_requst").unwrap_err();
        assert!(
            error.starts_with(
                "`on_requst` is not a warden hook; the hooks are: on_prompt, on_request,"
            ),
            "{error}"
        );
        assert!(
            error.ends_with("after_escalate, after_deescalate"),
            "{error}"
        );
        assert!(hook_variant("OnRequest").is_err());
        assert!(hook_variant("").is_err());
    }

    fn expanded(item: TokenStream) -> String {
        expand(TokenStream::new(), item).to_string()
    }

    #[test]
    fn exports_exactly_the_defined_hooks() {
        let out = expanded(quote! {
            impl Plugin for Allowlist {
                fn on_request(event: &Event) -> Result<Decision> { Ok(Decision::Continue) }
                fn after_deny(event: &Event) -> Result<Decision> { Ok(Decision::Continue) }
            }
        });
        let implemented = quote!(::std::vec![
            ::warden_sdk::Hook::OnRequest,
            ::warden_sdk::Hook::AfterDeny
        ]);
        assert!(out.contains(&implemented.to_string()), "{out}");
        assert!(
            out.contains(
                &quote!(
                    type __WardenPlugin = Allowlist;
                )
                .to_string()
            ),
            "{out}"
        );
        assert!(out.contains("export !"), "{out}");
        // The glue defines all twelve Guest functions; the defaults never run.
        for (name, _) in HOOKS {
            assert!(out.contains(&format!("fn {name} (")), "{name}: {out}");
        }
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn an_empty_impl_exports_no_hooks() {
        let out = expanded(quote!(impl Plugin for Quiet {}));
        assert!(out.contains(&quote!(::std::vec![]).to_string()), "{out}");
    }

    #[test]
    fn unknown_functions_are_compile_errors() {
        let out = expanded(quote! {
            impl Plugin for Typo {
                fn on_requst(event: &Event) -> Result<Decision> { Ok(Decision::Continue) }
            }
        });
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("`on_requst` is not a warden hook"), "{out}");
        assert!(!out.contains("export !"), "{out}");
    }

    #[test]
    fn misuse_is_a_compile_error() {
        for (attr, item) in [
            (
                TokenStream::new(),
                quote!(
                    struct NotAnImpl;
                ),
            ),
            (
                TokenStream::new(),
                quote!(impl Inherent { fn on_request() {} }),
            ),
            (
                TokenStream::new(),
                quote!(
                    impl<T> Plugin for Generic<T> {}
                ),
            ),
            (quote!(foo), quote!(impl Plugin for X {})),
        ] {
            let out = expand(attr, item).to_string();
            assert!(out.contains("compile_error"), "{out}");
        }
    }
}
