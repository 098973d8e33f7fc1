-- Newcomers whose first purchase was delivered in the last
-- carts.feedback_after_delivery_hours and who have not scored it yet: ask for a 1-10 score.
WITH first_orders AS (
    SELECT order_id, customer_id, created_at, delivered_at, total_amount,
           ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY created_at, order_id) AS nth
    FROM {{ src('orders') }} orders
    WHERE status IN {{ purchase_statuses }}
)
SELECT o.customer_id, o.order_id, o.created_at AS ordered_at, o.delivered_at, o.total_amount
FROM first_orders o
WHERE o.nth = 1
  AND o.delivered_at >= {{ now }} - INTERVAL '{{ (settings.carts.feedback_after_delivery_hours * 60) | round | int }} minutes'
  AND o.delivered_at < {{ now }}
  AND NOT EXISTS (SELECT 1 FROM {{ src('feedback') }} f WHERE f.order_id = o.order_id)
