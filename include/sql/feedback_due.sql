-- Newcomers whose first purchase was delivered in the last
-- carts.feedback_after_delivery_hours and who have not scored it yet: ask for a 1-10 score.
-- Only the few orders delivered in that window are candidates; customer_facts knows
-- each customer's first purchase (ties in time: the lowest order id).
WITH delivered AS (
    SELECT order_id, customer_id, created_at, delivered_at, total_amount
    FROM {{ src('orders') }} orders
    WHERE status IN {{ purchase_statuses }}
      AND delivered_at >= {{ now }} - INTERVAL '{{ (settings.carts.feedback_after_delivery_hours * 60) | round | int }} minutes'
      AND delivered_at < {{ now }}
)
SELECT o.customer_id, o.order_id, o.created_at AS ordered_at, o.delivered_at, o.total_amount
FROM delivered o
JOIN {{ mart('customer_facts') }} facts ON facts.first_order_id = o.order_id
WHERE NOT EXISTS (SELECT 1 FROM {{ src('feedback') }} f WHERE f.order_id = o.order_id)
