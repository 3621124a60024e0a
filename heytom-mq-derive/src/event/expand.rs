//! Generates the `Event` impl and its inventory registration.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};

use crate::event::ast::Container;
use crate::event::check::{EventModel, KafkaModel, PartitionKey, RabbitMqModel, RouteModel};

/// The impl and registration of a valid event.
pub fn expand(cont: &Container, model: &EventModel) -> TokenStream {
    let ident = cont.ident;
    let name = &model.name;
    let route = route(&model.route);
    let partition_key = match &model.partition_key {
        Some(pk) => partition_key(pk),
        None => quote!(::core::option::Option::None),
    };
    // The registration names neither the impl nor the type, so a type missing
    // its serde derives gets the two errors of the impl and no more.
    quote! {
        const _: () = {
            static __HEYTOM_ROUTE: ::heytom_mq::Route = #route;

            fn __heytom_route() -> &'static ::heytom_mq::Route {
                &__HEYTOM_ROUTE
            }

            #[automatically_derived]
            impl ::heytom_mq::Event for #ident {
                const NAME: &'static str = #name;

                fn route() -> &'static ::heytom_mq::Route {
                    &__HEYTOM_ROUTE
                }

                fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                    #partition_key
                }
            }

            // Some(schema) when the type also implements `schemars::JsonSchema`
            // (and heytom-mq's `schemars` feature is on), chosen in heytom-mq.
            fn __heytom_schema() -> ::core::option::Option<::heytom_mq::__private::serde_json::Value> {
                ::heytom_mq::__private::event_schema!(#ident)
            }

            ::heytom_mq::__private::inventory::submit! {
                ::heytom_mq::__private::EventRegistration {
                    name: #name,
                    route: __heytom_route,
                }
            }

            ::heytom_mq::__private::inventory::submit! {
                ::heytom_mq::__private::EventSchemaRegistration {
                    name: #name,
                    schema: __heytom_schema,
                }
            }
        };
    }
}

/// An impl with placeholder bodies, emitted next to the errors of an invalid
/// event so that its uses elsewhere do not add errors of their own.
pub fn stub(cont: &Container) -> TokenStream {
    let ident = cont.ident;
    let name = syn::ext::IdentExt::unraw(ident).to_string();
    quote! {
        impl ::heytom_mq::Event for #ident {
            const NAME: &'static str = #name;
            fn route() -> &'static ::heytom_mq::Route {
                static ROUTE: ::heytom_mq::Route = ::heytom_mq::Route::Default;
                &ROUTE
            }
            fn partition_key(&self) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::None
            }
        }
    }
}

fn partition_key(pk: &PartitionKey) -> TokenStream {
    let field = &pk.field;
    // Spanned at `partition_key = <field>`: a field without Display fails there.
    // Call-site hygiene, so `self` resolves to the receiver even when the
    // field token came from a `macro_rules!` expansion; located at the field.
    let span = proc_macro2::Span::call_site().located_at(field.span());
    if pk.optional {
        quote_spanned! {span=>
            ::core::option::Option::map(::core::option::Option::as_ref(&self.#field), ::std::string::ToString::to_string)
        }
    } else {
        quote_spanned! {span=>
            ::core::option::Option::Some(::std::string::ToString::to_string(&self.#field))
        }
    }
}

fn route(route: &RouteModel) -> TokenStream {
    match route {
        RouteModel::Kafka(k) => kafka(k),
        RouteModel::RabbitMq(r) => rabbitmq(r),
        RouteModel::Default => quote!(::heytom_mq::Route::Default),
    }
}

/// The value of a key that was given.
fn some<T: ToTokens>(v: &Option<T>) -> Option<TokenStream> {
    v.as_ref().map(|v| quote!(#v))
}

/// The enum value of a key that was given.
fn variant(ty: &str, v: &Option<&'static str>) -> Option<TokenStream> {
    let ty = format_ident!("{}", ty);
    v.map(|v| {
        let v = format_ident!("{}", v);
        quote!(::heytom_mq::#ty::#v)
    })
}

/// `.key(value)` for every key that was given: the routes are
/// `#[non_exhaustive]` and built with their `const` setters.
fn setter_calls(keys: &[(&str, Option<TokenStream>)]) -> Vec<TokenStream> {
    keys.iter()
        .filter_map(|(key, value)| {
            let key = format_ident!("{}", key);
            value.as_ref().map(|v| quote!(.#key(#v)))
        })
        .collect()
}

fn kafka(k: &KafkaModel) -> TokenStream {
    let topic = &k.topic;
    let group_id = some(&k.group_id);
    let partition_key = some(&k.partition_key);
    let num_partitions = some(&k.num_partitions);
    let replication_factor = some(&k.replication_factor);
    let retention_ms = some(&k.retention_ms);
    let compression_type = variant("CompressionType", &k.compression_type);
    let enable_idempotence = some(&k.enable_idempotence);
    let acks = variant("Acks", &k.acks);
    let auto_offset_reset = variant("AutoOffsetReset", &k.auto_offset_reset);
    let enable_auto_commit = some(&k.enable_auto_commit);
    let session_timeout_ms = some(&k.session_timeout_ms);
    let max_poll_records = some(&k.max_poll_records);
    let set = setter_calls(&[
        ("group_id", group_id),
        ("partition_key", partition_key),
        ("num_partitions", num_partitions),
        ("replication_factor", replication_factor),
        ("retention_ms", retention_ms),
        ("compression_type", compression_type),
        ("enable_idempotence", enable_idempotence),
        ("acks", acks),
        ("auto_offset_reset", auto_offset_reset),
        ("enable_auto_commit", enable_auto_commit),
        ("session_timeout_ms", session_timeout_ms),
        ("max_poll_records", max_poll_records),
    ]);
    quote! {
        ::heytom_mq::Route::Kafka(::heytom_mq::KafkaRoute::new(#topic) #(#set)*)
    }
}

fn rabbitmq(r: &RabbitMqModel) -> TokenStream {
    let routing_key = &r.routing_key;
    let exchange = some(&r.exchange);
    let exchange_type = variant("ExchangeType", &r.exchange_type);
    let queue_name = some(&r.queue_name);
    let durable = some(&r.durable);
    let message_ttl = some(&r.message_ttl);
    let max_length = some(&r.max_length);
    let max_priority = some(&r.max_priority);
    let dead_letter_exchange = some(&r.dead_letter_exchange);
    let dead_letter_routing_key = some(&r.dead_letter_routing_key);
    let overflow = variant("Overflow", &r.overflow);
    let queue_type = variant("QueueType", &r.queue_type);
    let set = setter_calls(&[
        ("exchange", exchange),
        ("exchange_type", exchange_type),
        ("queue_name", queue_name),
        ("durable", durable),
        ("message_ttl", message_ttl),
        ("max_length", max_length),
        ("max_priority", max_priority),
        ("dead_letter_exchange", dead_letter_exchange),
        ("dead_letter_routing_key", dead_letter_routing_key),
        ("overflow", overflow),
        ("queue_type", queue_type),
    ]);
    quote! {
        ::heytom_mq::Route::RabbitMq(::heytom_mq::RabbitMqRoute::new(#routing_key) #(#set)*)
    }
}
