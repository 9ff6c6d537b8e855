<?php
/**
 * Plugin Name: Neuroon click attribution
 * Description: Keeps the Neuroon widget's neuroon_clicks cookie on the order, for neuroon-gateway.
 */
function neuroon_gateway_clicks() {
    if ( empty( $_COOKIE['neuroon_clicks'] ) ) {
        return null;
    }
    // JSON, maybe URL-encoded, at most 4096 bytes: the gateway reads it as it is.
    return substr( wp_unslash( $_COOKIE['neuroon_clicks'] ), 0, 4096 );
}

// Classic checkout: the order is saved right after this hook.
add_action( 'woocommerce_checkout_create_order', function ( $order ) {
    $clicks = neuroon_gateway_clicks();
    if ( $clicks !== null ) {
        $order->update_meta_data( 'neuroon_clicks', $clicks );
    }
} );

// Block checkout (Store API).
add_action( 'woocommerce_store_api_checkout_update_order_meta', function ( $order ) {
    $clicks = neuroon_gateway_clicks();
    if ( $clicks !== null ) {
        $order->update_meta_data( 'neuroon_clicks', $clicks );
        $order->save();
    }
} );
