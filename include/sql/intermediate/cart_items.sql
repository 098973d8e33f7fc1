-- One row per cart and product added in the last carts.lookback_days: a cart is a
-- customer's (or, before they are known, a visitor's) adds. The quantity is the adds of
-- the product since its last removal, priced at the last add; `is_open` when not removed
-- since and not bought by a later order of the same customer or visitor. abandoned_carts
-- reads the open ones; the build's abandonment rate counts every cart started here.
WITH events AS (
    SELECT e.event_type, e.product_id, e.category, e.value, e.occurred_at, e.visitor_id,
           COALESCE(e.customer_id, m.customer_id) AS customer_id
    FROM {{ src('events') }} e
    LEFT JOIN {{ mart('identity_map') }} m ON m.visitor_id = e.visitor_id
    WHERE e.occurred_at >= {{ now }} - INTERVAL '{{ settings.carts.lookback_days }} days'
      AND e.event_type IN ('add_to_cart', 'remove_from_cart')
      AND e.product_id IS NOT NULL
), keyed AS (
    SELECT *, COALESCE('c:' || customer_id, 'v:' || visitor_id) AS cart_key,
           MAX(CASE WHEN event_type = 'remove_from_cart' THEN occurred_at END)
             OVER (PARTITION BY COALESCE('c:' || customer_id, 'v:' || visitor_id), product_id) AS removed_at
    FROM events
    WHERE customer_id IS NOT NULL OR visitor_id IS NOT NULL
), items AS (
    -- the last add (and its price), the last removal, the adds since that removal
    SELECT cart_key, product_id,
           MAX(customer_id) AS customer_id,
           MAX(visitor_id) AS visitor_id,
           MAX(category) AS category,
           MAX(occurred_at) FILTER (WHERE event_type = 'add_to_cart') AS added_at,
           MAX(removed_at) AS removed_at,
           COUNT(*) FILTER (WHERE event_type = 'add_to_cart' AND (removed_at IS NULL OR occurred_at > removed_at)) AS quantity,
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
)
SELECT t.cart_key, t.product_id, t.customer_id, t.visitor_id, t.category, t.added_at, t.removed_at,
       CAST(t.quantity AS BIGINT) AS quantity,
       CAST(t.value AS NUMERIC(18, 2)) AS value,
       t.added_at IS NOT NULL
         AND (t.removed_at IS NULL OR t.removed_at < t.added_at)
         AND (b.bought_at IS NULL OR b.bought_at < t.added_at) AS is_open
FROM items t
LEFT JOIN bought b ON b.cart_key = t.cart_key AND b.product_id = t.product_id
