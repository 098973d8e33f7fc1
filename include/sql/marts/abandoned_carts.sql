-- Carts left without an order: products added (and not removed) in the last
-- carts.lookback_days, not bought by a later order of the same customer or visitor,
-- the last add at least carts.abandon_after_hours ago. The catch-up offer depends on
-- the cart value against the free-delivery break-even threshold.
WITH events AS (
    SELECT e.event_type, e.product_id, e.category, e.value, e.occurred_at, e.visitor_id,
           COALESCE(e.customer_id, m.customer_id) AS customer_id
    FROM {{ src('events') }} e
    LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = e.visitor_id
    WHERE e.occurred_at >= {{ now }} - INTERVAL '{{ settings.carts.lookback_days }} days'
      AND e.event_type IN ('add_to_cart', 'remove_from_cart')
      AND e.product_id IS NOT NULL
), keyed AS (
    SELECT *, COALESCE('c:' || customer_id, 'v:' || visitor_id) AS cart_key
    FROM events
    WHERE customer_id IS NOT NULL OR visitor_id IS NOT NULL
), items AS (
    -- one row per cart and product: the last add (and its price), the last removal
    SELECT cart_key, product_id,
           MAX(customer_id) AS customer_id,
           MAX(visitor_id) AS visitor_id,
           MAX(category) AS category,
           MAX(occurred_at) FILTER (WHERE event_type = 'add_to_cart') AS added_at,
           MAX(occurred_at) FILTER (WHERE event_type = 'remove_from_cart') AS removed_at,
           (array_agg(value ORDER BY occurred_at DESC, value DESC) FILTER (WHERE event_type = 'add_to_cart'))[1] AS value
    FROM keyed
    GROUP BY cart_key, product_id
), bought AS (
    -- keyed like carts: a customer's orders, and an order placed from a visitor's browser;
    -- only orders inside the lookback can close a cart added inside it
    SELECT cart_key, product_id, MAX(created_at) AS bought_at
    FROM (
        SELECT 'c:' || o.customer_id AS cart_key, o.created_at, i.product_id
        FROM {{ src('orders') }} o
        JOIN {{ src('order_items') }} i ON i.order_id = o.order_id
        WHERE o.status <> 'cancelled' AND o.created_at >= {{ now }} - INTERVAL '{{ settings.carts.lookback_days }} days'
        UNION ALL
        SELECT 'v:' || o.visitor_id, o.created_at, i.product_id
        FROM {{ src('orders') }} o
        JOIN {{ src('order_items') }} i ON i.order_id = o.order_id
        WHERE o.status <> 'cancelled' AND o.visitor_id IS NOT NULL
          AND o.created_at >= {{ now }} - INTERVAL '{{ settings.carts.lookback_days }} days'
    ) ordered
    GROUP BY cart_key, product_id
), open_items AS (
    SELECT t.*
    FROM items t
    LEFT JOIN bought b ON b.cart_key = t.cart_key AND b.product_id = t.product_id
    WHERE t.added_at IS NOT NULL
      AND (t.removed_at IS NULL OR t.removed_at < t.added_at)
      AND (b.bought_at IS NULL OR b.bought_at < t.added_at)
), carts AS (
    SELECT cart_key,
           MAX(customer_id) AS customer_id,
           MAX(visitor_id) AS visitor_id,
           COUNT(*) AS items,
           string_agg(product_id, ',' ORDER BY product_id) AS product_ids,
           string_agg(DISTINCT category, ',' ORDER BY category) AS categories,
           SUM(COALESCE(value, 0)) AS cart_value,
           MIN(added_at) AS first_added_at,
           MAX(added_at) AS last_added_at
    FROM open_items
    GROUP BY cart_key
)
SELECT cart_key,
       customer_id,
       visitor_id,
       CAST(items AS BIGINT) AS items,
       product_ids,
       categories,
       CAST(cart_value AS NUMERIC(18, 2)) AS cart_value,
       first_added_at,
       last_added_at,
       CAST({{ hours_between(now, 'last_added_at') }} AS DOUBLE PRECISION) AS hours_since_last_add,
       CASE WHEN cart_value >= {{ settings.carts.free_delivery_threshold }} THEN 'reminder'
            ELSE 'free_delivery_topup' END AS offer,
       CAST(GREATEST(0, {{ settings.carts.free_delivery_threshold }} - cart_value) AS NUMERIC(18, 2)) AS amount_to_free_delivery
FROM carts
WHERE last_added_at <= {{ now }} - INTERVAL '{{ (settings.carts.abandon_after_hours * 60) | round | int }} minutes'
