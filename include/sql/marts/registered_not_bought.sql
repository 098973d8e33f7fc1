-- Registered in the last carts.registered_within_days, last visit between
-- carts.last_visit_days ago, never bought: remind them of what they looked at.
WITH registrants AS (
    SELECT c.customer_id, c.registered_at
    FROM {{ src('customers') }} c
    WHERE c.registered_at >= {{ now }} - INTERVAL '{{ settings.carts.registered_within_days }} days'
      AND NOT EXISTS (SELECT 1 FROM {{ src('orders') }} o
                      WHERE o.customer_id = c.customer_id AND o.status IN {{ purchase_statuses }})
), their_visitors AS (
    SELECT m.visitor_id, m.customer_id
    FROM {{ mart('identity_map') }} m
    JOIN registrants r ON r.customer_id = m.customer_id
), visits AS (
    -- only the few recent registrants' events: probe the large events table with them
    SELECT e.customer_id, e.event_type, e.product_id, e.occurred_at
    FROM {{ src('events') }} e
    JOIN registrants r ON r.customer_id = e.customer_id
    UNION ALL
    SELECT v.customer_id, e.event_type, e.product_id, e.occurred_at
    FROM {{ src('events') }} e
    JOIN their_visitors v ON v.visitor_id = e.visitor_id
    WHERE e.customer_id IS NULL
), recent AS (
    SELECT r.customer_id, r.registered_at, MAX(v.occurred_at) AS last_visit_at
    FROM registrants r
    JOIN visits v ON v.customer_id = r.customer_id
    GROUP BY r.customer_id, r.registered_at
), looked_at AS (
    SELECT customer_id, COUNT(DISTINCT product_id) AS products_viewed,
           string_agg(product_id, ',' ORDER BY product_id) FILTER (WHERE place <= 10) AS product_ids
    FROM (
        SELECT customer_id, product_id,
               ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY MAX(CASE WHEN event_type = 'add_to_cart' THEN 1 ELSE 0 END) DESC,
                                  COUNT(*) DESC, product_id) AS place
        FROM visits
        WHERE event_type IN ('product_view', 'add_to_cart') AND product_id IS NOT NULL AND customer_id IS NOT NULL
        GROUP BY customer_id, product_id
    ) ranked
    GROUP BY customer_id
)
SELECT r.customer_id, r.registered_at, r.last_visit_at,
       CAST(COALESCE(l.products_viewed, 0) AS BIGINT) AS products_viewed, l.product_ids
FROM recent r
LEFT JOIN looked_at l ON l.customer_id = r.customer_id
WHERE r.last_visit_at >= {{ now }} - INTERVAL '{{ settings.carts.last_visit_days[1] }} days'
  AND r.last_visit_at < {{ now }} - INTERVAL '{{ settings.carts.last_visit_days[0] }} days'
