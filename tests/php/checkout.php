<?php
/**
 * One WooCommerce checkout around integrations/woocommerce/neuroon-clicks.php, for
 * tests/test_woocommerce_snippet.py. Run as the router of PHP's built-in server (php -S), so that
 * PHP itself turns the request's Cookie header into $_COOKIE, as it does under WordPress.
 *
 * GET /?hook=classic|block answers {"meta_data": [...]}: the order's meta as saved, in the shape of
 * the REST order (and so of the webhook's payload). Any error, warning or notice answers 500.
 *
 * Only what the snippet calls is stubbed, each as WordPress / WooCommerce define it.
 */

error_reporting( E_ALL );
set_error_handler(
	function ( $severity, $message, $file, $line ) {
		throw new ErrorException( $message, 0, $severity, $file, $line );
	}
);

// --- wp-includes/load.php: wp_magic_quotes() slashes $_COOKIE on every request ------------

function add_magic_quotes( $data ) {
	foreach ( (array) $data as $key => $value ) {
		if ( is_array( $value ) ) {
			$data[ $key ] = add_magic_quotes( $value );
		} elseif ( is_string( $value ) ) {
			$data[ $key ] = addslashes( $value );
		}
	}
	return $data;
}

$_COOKIE = add_magic_quotes( $_COOKIE );

// --- wp-includes/formatting.php, functions.php: wp_unslash() ------------------------------

function wp_unslash( $value ) {
	return stripslashes_deep( $value );
}

function stripslashes_deep( $value ) {
	return map_deep( $value, 'stripslashes_from_strings_only' );
}

function stripslashes_from_strings_only( $value ) {
	return is_string( $value ) ? stripslashes( $value ) : $value;
}

function map_deep( $value, $callback ) {
	if ( is_array( $value ) ) {
		foreach ( $value as $index => $item ) {
			$value[ $index ] = map_deep( $item, $callback );
		}
	} elseif ( is_object( $value ) ) {
		foreach ( get_object_vars( $value ) as $name => $property ) {
			$value->$name = map_deep( $property, $callback );
		}
	} else {
		$value = call_user_func( $callback, $value );
	}
	return $value;
}

// --- wp-includes/plugin.php: a callback gets the first $accepted_args arguments -----------

$wp_filter = array();

function add_action( $hook_name, $callback, $priority = 10, $accepted_args = 1 ) {
	global $wp_filter;
	$wp_filter[ $hook_name ][ $priority ][] = array( $callback, $accepted_args );
	return true;
}

function do_action( $hook_name, ...$args ) {
	global $wp_filter;
	$by_priority = $wp_filter[ $hook_name ] ?? array();
	ksort( $by_priority );
	foreach ( $by_priority as $callbacks ) {
		foreach ( $callbacks as list( $callback, $accepted_args ) ) {
			call_user_func_array( $callback, array_slice( $args, 0, $accepted_args ) );
		}
	}
}

// --- WC_Order: WC_Data's meta in memory, written by save() ---------------------------------

class WC_Order {
	/** @var array<int, array{id: int, key: string, value: mixed}> The meta as saved (WC_Meta_Data::get_data()). */
	public $saved = array();
	/** @var array<int, array{id: int, key: string, value: mixed}> */
	private $meta;
	private $next_id = 3550;

	public function __construct( array $meta ) {
		$this->meta  = $meta;
		$this->saved = $meta;
	}

	/** WC_Data::update_meta_data(): the first entry with the key takes the value, the others go. */
	public function update_meta_data( $key, $value, $meta_id = 0 ) {
		$first = null;
		foreach ( $this->meta as $i => $meta ) {
			if ( $meta['key'] === $key ) {
				if ( null === $first ) {
					$first                       = $i;
					$this->meta[ $i ]['value'] = $value;
				} else {
					unset( $this->meta[ $i ] );
				}
			}
		}
		if ( null === $first ) {
			$this->meta[] = array( 'id' => 0, 'key' => $key, 'value' => $value );
		}
	}

	public function save() {
		$saved = array();
		foreach ( $this->meta as $i => $meta ) {
			// wpdb::process_fields() refuses a value that is not valid UTF-8 for the utf8mb4 meta
			// table (strip_invalid_text changes it): the insert fails and nothing is stored.
			if ( is_string( $meta['value'] ) && ! preg_match( '//u', $meta['value'] ) ) {
				continue;
			}
			if ( 0 === $meta['id'] ) {
				$this->meta[ $i ]['id'] = $this->next_id++;
			}
			$saved[] = $this->meta[ $i ];
		}
		$this->saved = $saved;
		return 897;
	}
}

// --- the checkout ---------------------------------------------------------------------------

header( 'Content-Type: application/json' );
try {
	require __DIR__ . '/../../integrations/woocommerce/neuroon-clicks.php';
	$order = new WC_Order( array( array( 'id' => 3549, 'key' => '_wc_order_attribution_source_type', 'value' => 'typein' ) ) );
	if ( 'classic' === $_GET['hook'] ) {
		// WC_Checkout::create_order(): the hook, then $order->save().
		do_action( 'woocommerce_checkout_create_order', $order, array( 'payment_method' => 'bacs' ) );
		$order->save();
	} else {
		// Store API Checkout::create_or_update_draft_order(): the hook, and no save after it.
		do_action( 'woocommerce_store_api_checkout_update_order_meta', $order );
	}
	echo json_encode( array( 'meta_data' => $order->saved ), JSON_THROW_ON_ERROR );
} catch ( Throwable $error ) {
	http_response_code( 500 );
	echo json_encode( array( 'error' => get_class( $error ) . ': ' . $error->getMessage() ), JSON_INVALID_UTF8_SUBSTITUTE );
}
