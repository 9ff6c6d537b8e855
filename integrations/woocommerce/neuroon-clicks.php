<?php
/**
 * Plugin Name: Neuroon click attribution
 * Description: Keeps the Neuroon widget's neuroon_clicks cookie on the order, for neuroon-gateway.
 */
function neuroon_gateway_clicks() {
    // A cookie named neuroon_clicks[...] reaches PHP as an array: not ours, and substr() would throw.
    if ( ! isset( $_COOKIE['neuroon_clicks'] ) || ! is_string( $_COOKIE['neuroon_clicks'] ) ) {
        return null;
    }
    // JSON (PHP has already URL-decoded it), kept as it is: the gateway reads it defensively, and
    // sanitize_text_field() would corrupt it (it strips tags and %XX). At most 4096 bytes.
    $clicks = substr( wp_unslash( $_COOKIE['neuroon_clicks'] ), 0, 4096 );
    // A cut (this one or the browser's) can split a UTF-8 character, and WordPress stores nothing
    // for a value that is not valid UTF-8: drop the split character (up to 3 bytes) and a split
    // escape after it ("%F0%9D%8" decodes to 2 bytes and "%8"). Anything else invalid is not the
    // widget's cookie.
    for ( $i = 0; $i < 5 && ! preg_match( '//u', $clicks ); $i++ ) {
        $clicks = substr( $clicks, 0, -1 );
    }
    return ( '' !== $clicks && preg_match( '//u', $clicks ) ) ? $clicks : null;
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
