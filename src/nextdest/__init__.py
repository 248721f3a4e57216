"""nextdest: next-destination recommendation for multi-destination trips.

Task and data format: Booking.com WSDM WebTour 2021 challenge (accuracy@4 of the final city).
"""

__version__ = "0.1.0"
